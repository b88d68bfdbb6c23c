"Notebooks are the source: exporting them reproduces the committed modules, and the README is current."
import shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

def test_export_reproduces_modules(tmp_path):
    "`nbdev-export` on a copy of the notebooks writes exactly the committed `dogft/*.py`."
    for name in ('nbs', 'dogft'): shutil.copytree(ROOT/name, tmp_path/name, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints'))
    shutil.copy(ROOT/'pyproject.toml', tmp_path)
    for f in (tmp_path/'dogft').glob('*.py'):
        if f.name != '__init__.py': f.unlink()
    subprocess.run([BIN/'nbdev-export'], cwd=tmp_path, check=True, capture_output=True)
    committed = {f.name: f.read_text() for f in (ROOT/'dogft').glob('*.py')}
    exported = {f.name: f.read_text() for f in (tmp_path/'dogft').glob('*.py')}
    assert exported.keys() == committed.keys(), f'modules differ: {exported.keys() ^ committed.keys()}'
    stale = [n for n in committed if committed[n] != exported[n]]
    assert not stale, f'run nbdev-export: {stale} do not match their notebooks'

def test_readme_is_current():
    "README.md is what `tools/make_readme.py` renders from nbs/index.ipynb."
    sys.path.insert(0, str(ROOT/'tools'))
    import make_readme
    assert (ROOT/'README.md').read_text() == make_readme.render(), 'run `python tools/make_readme.py`'
