"Every console script, as a user runs it: `--help` works, and a bad input is one line `{prog}: error: ...` on stderr with exit status 2, never a traceback."
import os, subprocess, sys, tomllib
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCRIPTS = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['scripts']

def run(prog, *args, cwd, timeout=300):
    "Run console script `prog` in `cwd` (also `DOGFT_HOME`), offline, with no data source from the environment."
    env = {k: v for k, v in os.environ.items() if k not in ('DOGFT_SOURCE', 'DOGFT_URL', 'DOGFT_HOME')}
    env.update(DOGFT_HOME=str(cwd), HF_HUB_OFFLINE='1')
    return subprocess.run([str(BIN/prog), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)

@pytest.mark.parametrize('prog', sorted(SCRIPTS))
def test_help(prog, tmp_path):
    r = run(prog, '--help', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('usage: ') and prog in r.stdout.splitlines()[0], r.stdout

# one bad input per command, and a word the message must contain (the problem or its fix)
BAD = {'dogft-data': (['--breeds', 'beagel'], 'did you mean beagle'),
       'dogft-train': (['--strategy', 'freez'], 'freez'),
       'dogft-run-all': (['--strategies', 'freeze,bogus'], 'bogus'),
       'dogft-analyze': ([], 'no usable metrics files'),
       'dogft-export': ([], 'no finished run'),
       'dogft-predict': (['--model', 'missing.onnx', 'dog.jpg'], 'missing.onnx')}

def test_every_script_has_a_bad_input_case():
    assert set(BAD) == set(SCRIPTS), set(SCRIPTS) ^ set(BAD)

@pytest.mark.parametrize('prog', sorted(BAD))
def test_bad_input_is_one_line(prog, tmp_path):
    args,needle = BAD[prog]
    r = run(prog, *args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith(f'{prog}: error: ') and needle in lines[-1], r.stderr
    assert 'Traceback' not in r.stdout + r.stderr
