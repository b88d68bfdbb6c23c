"Every console script, as a user runs it: `--help` works, and a bad input is one line `{prog}: error: ...` on stderr with exit status 2, never a traceback."
import os, subprocess, sys, tomllib
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCRIPTS = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['scripts']

def run(prog, *args, cwd, timeout=300, env=None):
    "Run console script `prog` in `cwd` (also `DOGFT_HOME`), offline, with no data source from the environment (unless `env` gives one)."
    env = {k: v for k, v in os.environ.items() if k not in ('DOGFT_SOURCE', 'DOGFT_URL', 'DOGFT_HOME')} | (env or {})
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

# ---------------------------------------------------------------- a home the user cannot write to, or a full disk (issue 26)

def _fake_source(tmp_path):
    from dogft.testing import make_fake_stanford
    return make_fake_stanford(tmp_path/'src', breeds=('beagle',), n=8)

@pytest.fixture
def read_only_home(tmp_path):
    "A DOGFT_HOME nobody can write: a read-only mount where this process may mount (root), else a folder without write permission."
    home = tmp_path/'home'
    home.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', str(home)], capture_output=True).returncode:
            pytest.skip('running as root without the right to mount: root writes through any folder mode')
        yield home
        subprocess.run(['umount', str(home)], check=True)
    else:
        home.chmod(0o555)
        yield home
        home.chmod(0o755)

TWO = ['--breeds', 'beagle,boxer']
@pytest.mark.parametrize('argv', [['dogft-data', *TWO], ['dogft-train', *TWO, '--epochs', '1'], ['dogft-analyze'], ['dogft-export'],
                                  ['dogft-run-all', *TWO, '--models', 'efficientnet_lite0', '--strategies', 'freeze']], ids=lambda a: a[0])
def test_read_only_home_is_one_line(tmp_path, read_only_home, argv):
    "Every command in a DOGFT_HOME it cannot write: one line naming the folder and the fix, no traceback."
    from dogft.testing import make_fake_stanford
    src = make_fake_stanford(tmp_path/'src', breeds=('beagle', 'boxer'), n=8)
    r = run(*argv, cwd=read_only_home, env=dict(DOGFT_SOURCE=str(src)))
    lines = r.stderr.strip().splitlines()
    assert r.returncode in (1, 2) and len(lines) == 1 and lines[0].startswith(f'{argv[0]}: error: ') and 'Traceback' not in r.stderr, r.stderr
    assert str(read_only_home) in lines[0] or argv[0] in ('dogft-analyze', 'dogft-export'), r.stderr

# errno -> what the one line must say; the console script runs in a subprocess whose os.mkdir fails inside DOGFT_HOME as the OS would
ERRNOS = {'EACCES': 'no permission to use {home}/data (Permission denied): set DOGFT_HOME to a folder you can write, or fix its permissions',
          'EROFS': 'is on a read-only file system: set DOGFT_HOME to a folder you can write',
          'ENOSPC': 'no space left on the disk of'}

@pytest.mark.parametrize('name', sorted(ERRNOS))
def test_os_errors_are_one_line(tmp_path, name):
    "Through the real console-script wrapper: a read-only or full DOGFT_HOME is one line naming the path and the fix, exit status 1."
    src, home = _fake_source(tmp_path), tmp_path/'home'
    home.mkdir()
    code = f"""
import errno, os, runpy, sys
real = os.mkdir
def mkdir(p, *a, **kw):
    if str(p).startswith({str(home)!r}): raise OSError(errno.{name}, os.strerror(errno.{name}), str(p))
    return real(p, *a, **kw)
os.mkdir = mkdir
sys.argv = ['dogft-data', '--source', {str(src)!r}, '--breeds', 'beagle']
runpy.run_path({str(BIN/'dogft-data')!r}, run_name='__main__')
"""
    env = {k: v for k, v in os.environ.items() if k not in ('DOGFT_SOURCE', 'DOGFT_URL')}
    r = subprocess.run([sys.executable, '-c', code], cwd=home, env=dict(env, DOGFT_HOME=str(home)), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('dogft-data: error: ') and str(home/'data') in lines[0] and ERRNOS[name].format(home=home) in lines[0], r.stderr
    assert 'Traceback' not in r.stderr
