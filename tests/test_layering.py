"Layering: each step imports only the steps before it, and the light commands (`dogft-data`, `dogft-analyze`, `dogft-predict`) and every `--help` of those and `dogft-export` start without torch."
import ast, json, os, subprocess, sys, textwrap, tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT/'dogft'
SCRIPTS = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['scripts']

# the pipeline, left to right (design.md): a module may import only the steps to its left. The model file's metadata,
# which export writes and the predictor reads, is in core.
STEPS = ['core', 'data', 'loaders', 'models', 'engine', 'strategies', 'features', 'config', 'train', 'run_all', 'cluster', 'analysis', 'export', 'predict', 'web']
ONLY = {'predict': {'core'}}  # the deployable predictor: onnxruntime, numpy, Pillow and dogft.core, nothing else of dogft
LAZY = {'run_all': {'train', 'cluster', 'analysis', 'export'},  # the orchestrator calls later steps, imported inside its functions
        'export': {'web'}}  # dogft-export --web writes the page after the export
ANYTHING = {'testing'}  # test fixtures, kept out of the library's import graph
TORCH = ('torch', 'torchvision', 'timm', 'fastai')  # packages that make an import take seconds

def _imports(path:Path):
    "`(module, line, lazy)` for every import in `path` that names a `dogft` module or an outside package; `lazy`: inside a function."
    tree = ast.parse(path.read_text(), str(path))
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    def lazy(n):
        while n in parents:
            n = parents[n]
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)): return True
        return False
    for n in ast.walk(tree):
        if isinstance(n, ast.Import): names = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            if n.level: base = ['dogft'] + ([n.module] if n.module else [])  # `from .x import y`, `from . import x`
            else: base = n.module.split('.')
            names = ['.'.join(base + [a.name]) if base == ['dogft'] else '.'.join(base) for a in n.names]
        else: continue
        for name in names: yield name, n.lineno, lazy(n)

def _modules():
    return sorted(p.stem for p in PKG.glob('*.py') if not p.name.startswith('_'))

def _dogft_imports(mod):
    "`(step, line, lazy)` for each import of another dogft module by `mod`."
    for name,line,lz in _imports(PKG/f'{mod}.py'):
        parts = name.split('.')
        if parts[0] == 'dogft' and len(parts) > 1: yield parts[1], line, lz

def test_every_module_has_a_place():
    "A new module must be placed in the order (or be the fixtures module)."
    assert set(_modules()) - set(STEPS) - ANYTHING == set(), 'add the new module to STEPS in tests/test_layering.py'

def test_no_module_imports_a_later_step():
    bad = []
    for mod in _modules():
        if mod in ANYTHING or mod not in STEPS: continue
        for dst,line,lz in _dogft_imports(mod):
            where = f"dogft/{mod}.py:{line} imports dogft.{dst}" + (' (inside a function)' if lz else '')
            if dst not in STEPS: bad.append(f"{where}, which is not a step of the pipeline"); continue
            if mod in ONLY and dst not in ONLY[mod]: bad.append(f"{where}: dogft.{mod} may import only {', '.join(sorted(ONLY[mod]))}"); continue
            if STEPS.index(dst) < STEPS.index(mod): continue
            if lz and dst in LAZY.get(mod, ()): continue
            bad.append(f"{where}, a later step ({' < '.join(STEPS[STEPS.index(mod):STEPS.index(dst) + 1])})")
    assert not bad, 'imports against the pipeline order:\n' + '\n'.join(bad)

def _heavy_at_import(mod, seen=()):
    "The torch-like packages importing dogft.`mod` loads, by its module-level imports and those of the dogft modules it imports."
    out = set()
    for name,line,lz in _imports(PKG/f'{mod}.py'):
        if lz: continue
        parts = name.split('.')
        if parts[0] in TORCH: out.add(f"{parts[0]} (dogft/{mod}.py:{line})")
        elif parts[0] == 'dogft' and len(parts) > 1 and parts[1] in _modules() and parts[1] not in seen:
            out |= _heavy_at_import(parts[1], (*seen, mod))
    return out

@pytest.mark.parametrize('mod', ['core', 'data', 'analysis', 'export', 'predict', 'web'])
def test_light_modules_import_no_torch_at_top_level(mod):
    assert not _heavy_at_import(mod), f"dogft.{mod} imports at module level: {sorted(_heavy_at_import(mod))}; import it inside the function that needs it"

def _run(code, cwd, *args):
    env = {k: v for k,v in os.environ.items() if k not in ('DOGFT_SOURCE', 'DOGFT_HOME', 'IN_TEST')}
    env['DOGFT_HOME'] = str(cwd)  # if a command ran instead of its help, it would work here, not in the repository
    return subprocess.run([sys.executable, *code, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)

def test_data_imports_no_onnxruntime_nor_torch(tmp_path):
    r = _run(['-c', "import dogft.data, sys; print('onnxruntime' in sys.modules, 'torch' in sys.modules)"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == 'False False'

@pytest.mark.parametrize('prog', ['dogft-data', 'dogft-analyze', 'dogft-predict', 'dogft-export'])
def test_help_imports_no_torch(prog, tmp_path):
    "Run `prog --help` as its console script does (`sys.exit(main())` in a file run as `__main__`), then list what got imported."
    mod,func = SCRIPTS[prog].split(':')
    script = tmp_path/prog
    script.write_text(textwrap.dedent(f"""
        import atexit, json, sys
        atexit.register(lambda: print('LOADED', json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(TORCH) | {'onnxruntime'}!r}))))
        from {mod} import {func}
        sys.exit({func}())"""))
    r = _run([script], tmp_path, '--help')
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f'usage: {prog}'), r.stdout
    loaded = set(json.loads(r.stdout.rsplit('LOADED ', 1)[1]))
    heavy = loaded & set(TORCH)
    assert not heavy, f"{prog} --help imports {sorted(heavy)}"
    assert 'onnxruntime' not in loaded, f"{prog} --help imports onnxruntime"  # the predictor loads it with a model
