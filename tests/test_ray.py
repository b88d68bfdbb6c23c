"`dogft-run-all --ray`: on a local Ray cluster (127.0.0.1, two raylets of 2 CPUs, each with its own temp dir) a small matrix gives the files a local run gives, with shared storage and without; finished runs are skipped; a killed worker's run is retried and resumes from its checkpoint."
import json, os, shutil, signal, socket, subprocess, sys, tempfile, threading, time
from pathlib import Path

import pytest

from dogft.testing import make_fake_stanford

BIN = Path(sys.executable).parent
BREEDS = 'beagle,boxer'
RAY_ENV = dict(RAY_AUTH_MODE='disabled', RAY_USAGE_STATS_ENABLED='0')  # a throwaway cluster on 127.0.0.1: no token to hand around
has_ray = shutil.which('ray', path=str(BIN)) is not None
needs_ray = pytest.mark.skipif(not has_ray and not os.environ.get('DOGFT_REQUIRE_CHROMIUM'), reason='Ray is an optional extra: pip install -e ".[ray]"')
MATRIX = ['--models', 'efficientnet_lite0', '--strategies', 'freeze,partial', '--seeds', '42', '--img-size', '64',  # the recipe's epochs: partial starts from this freeze run
          '--batch-size', '8', '--device', 'cpu', '--breeds', BREEDS, '--skip-followups']

def _env(home:Path)->dict:
    env = {k: v for k,v in os.environ.items() if k not in ('IN_TEST', 'DOGFT_SOURCE', 'RAY_ADDRESS')}
    return env | RAY_ENV | dict(DOGFT_HOME=str(home), DOGFT_SHARED_DATA='none', HF_HUB_OFFLINE='1')

def _home(tmp_path:Path, name:str)->Path:
    "An empty home with the synthetic images beside it."
    home = tmp_path/name
    home.mkdir()
    make_fake_stanford(home/'src', BREEDS.split(','), n=10)
    return home

def run_all(home:Path, *args, timeout=900):
    "`dogft-run-all` in `home` with `args`, the matrix's data from `home/src`."
    return subprocess.run([BIN/'dogft-run-all', *MATRIX, '--source', home/'src', *map(str, args)], cwd=home, env=_env(home),
                          capture_output=True, text=True, timeout=timeout)

def predictions(home:Path)->dict:
    "Each metrics file's test predictions (path, predicted class, probabilities) by file name."
    return {f.name: [(p['path'], p['predicted'], p['probabilities']) for p in json.loads(f.read_text())['test_predictions']]
            for f in sorted((home/'results'/'metrics').glob('*_results.json'))}

@pytest.fixture(scope='module')
def cluster():
    "Two Ray nodes on this machine, 2 CPUs each: the head and a second raylet with a temp dir of its own; the head's address."
    ray = BIN/'ray'
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    dirs = [tempfile.mkdtemp(prefix='rh', dir='/tmp'), tempfile.mkdtemp(prefix='rw', dir='/tmp')]  # short: Ray's socket paths have a length limit
    env = {**os.environ, **RAY_ENV}
    common = ['--node-ip-address=127.0.0.1', '--num-cpus=2', '--disable-usage-stats']
    r = subprocess.run([ray, 'start', '--head', f'--port={port}', '--include-dashboard=false', f'--temp-dir={dirs[0]}', *common], env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([ray, 'start', f'--address=127.0.0.1:{port}', f'--temp-dir={dirs[1]}', *common], env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    try: yield f'127.0.0.1:{port}'
    finally:
        subprocess.run([ray, 'stop', '--force'], env=env, capture_output=True, timeout=120)
        for d in dirs: shutil.rmtree(d, ignore_errors=True)

def test_without_ray_it_says_how_to_install(tmp_path):
    "`--ray` where Ray is not installed: one line saying how to install it, exit status 2, nothing trained."
    (tmp_path/'noray').mkdir()
    (tmp_path/'noray'/'ray.py').write_text('raise ImportError("no Ray here")\n')
    home = _home(tmp_path, 'home')
    env = _env(home) | dict(PYTHONPATH=str(tmp_path/'noray'))
    r = subprocess.run([BIN/'dogft-run-all', *MATRIX, '--source', home/'src', '--ray'], cwd=home, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and 'pip install -e ".[ray]"' in r.stderr.strip().splitlines()[-1], r.stdout[-2000:] + r.stderr[-2000:]
    assert not (home/'results'/'metrics').exists()

@needs_ray
def test_ray_matrix_gives_the_local_results(cluster, tmp_path):
    "The same matrix here, through Ray with shared storage, and through Ray sending the files back: the same runs, the same test predictions; run again, the finished runs are skipped."
    homes = {k: _home(tmp_path, k) for k in ('local', 'shared', 'copy')}
    worker_homes = lambda: set((Path(tempfile.gettempdir())/'dogft-ray').glob('*'))
    before = worker_homes()
    out = dict(local=run_all(homes['local']), shared=run_all(homes['shared'], '--ray', cluster),
               copy=run_all(homes['copy'], '--ray', cluster, '--ray-storage', 'copy'))
    for k,r in out.items(): assert r.returncode == 0 and '2 runs: 2 ran, 0 skipped, 0 failed' in r.stdout, (k, r.stdout[-3000:], r.stderr[-3000:])
    assert f'ray: {cluster}: 2 nodes, 4 CPUs, 0 GPUs; each run asks for 2 CPUs and 0 GPUs; storage: shared (every node sees' in out['shared'].stdout
    assert 'storage: copy (asked for)' in out['copy'].stdout
    for k in ('shared', 'copy'):
        lines = out[k].stdout.splitlines()
        assert sum(': started on ' in l and '(worker pid ' in l for l in lines) == 2, lines
        assert sum(f': ran on {socket.gethostname()} in ' in l for l in lines) == 2, lines
        # the partial run waits for the freeze run it starts from: its start comes after the freeze run's end
        assert lines.index(next(l for l in lines if 'freeze_s42: ran on' in l)) < lines.index(next(l for l in lines if 'partial_s42: started on' in l))
    want = predictions(homes['local'])
    assert len(want) == 3  # freeze, partial and the zero-shot row
    for k in ('shared', 'copy'):
        assert predictions(homes[k]) == want, k
        files = lambda h: sorted(str(p.relative_to(h)) for sub in ('results/runs', 'results/metrics', 'models') for p in (h/sub).rglob('*')
                                 if p.is_file() and 'checkpoints' not in p.parts)  # the resume checkpoints stay with the worker that trained
        assert files(homes[k]) == files(homes['local']), k
    assert worker_homes() == before, 'copy mode leaves no worker home behind'
    again = run_all(homes['copy'], '--ray', cluster, '--ray-storage', 'copy')
    assert again.returncode == 0 and '2 runs: 0 ran, 2 skipped, 0 failed' in again.stdout, again.stdout[-2000:]

@needs_ray
def test_killed_worker_is_retried_and_resumes(cluster, tmp_path):
    "SIGKILL to the worker of a run after its second epoch: Ray runs it again, the driver says so, and the run resumes from its checkpoint to one unbroken history."
    import torch
    home = _home(tmp_path, 'home')
    args = ['--models', 'efficientnet_lite0', '--strategies', 'full', '--seeds', '42', '--epochs', '8', '--img-size', '64', '--batch-size', '4',
            '--device', 'cpu', '--breeds', BREEDS, '--skip-followups', '--augment', 'none', '--set', 'patience=20,cache_features=False']
    proc = subprocess.Popen([BIN/'dogft-run-all', *args, '--source', home/'src', '--ray', cluster], cwd=home, env=_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    last = home/'models'/'checkpoints'/'efficientnet_lite0_full_s42'/'last.pth'
    t0, killed = time.time(), None
    while time.time() - t0 < 600 and killed is None:
        assert proc.poll() is None, ''.join(lines)[-3000:]
        started = [l for l in list(lines) if 'full_s42: started on' in l]
        if started and last.exists():
            try: epoch = torch.load(last, weights_only=False)['epoch']
            except Exception: epoch = 0  # being written
            if epoch >= 2:
                killed = int(started[-1].split('worker pid ')[1].split(')')[0].split(',')[0])
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    assert killed, ''.join(lines)[-3000:]
    proc.wait(timeout=900); reader.join(10)
    out = ''.join(lines)
    assert proc.returncode == 0, out[-4000:]
    assert 'full_s42: started on' in out and 'attempt 2: its last worker died' in out, out[-3000:]
    assert '1 run: 1 ran, 0 skipped, 0 failed' in out, out[-3000:]
    nb = (home/'results'/'runs'/'efficientnet_lite0__full__s42.ipynb').read_text()
    assert '[efficientnet_lite0_full_s42] resuming after epoch' in nb
    m = json.loads((home/'results'/'metrics'/'efficientnet_lite0_full_s42_results.json').read_text())
    assert [h['epoch'] for h in m['history']] == list(range(1, 9))
