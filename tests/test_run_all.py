"`dogft-run-all` end to end: exit statuses of the command, and one tiny real run of `nbs/03_train.ipynb` through papermill."
import dataclasses, importlib.util, json, os, subprocess, sys
from pathlib import Path

import pytest

from dogft.core import DogftError
from dogft.config import TrainConfig
from dogft.testing import make_fake_stanford
from dogft.data import prepare_data
from dogft.testing import standin_train_notebook
from dogft.run_all import check_params, notebook_params, train_notebook

ROOT = Path(__file__).resolve().parents[1]
CMD = str(Path(sys.executable).parent/'dogft-run-all')
BREEDS = 'beagle,boxer'
STANDIN_PARAMS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # the train notebook's parameters
has_train = importlib.util.find_spec('dogft.train') is not None
real_nb = ROOT/'nbs'/'03_train.ipynb'


@pytest.fixture
def home(tmp_path):
    "A `$DOGFT_HOME` with a tiny prepared data set (two breeds of synthetic images)."
    prepare_data(make_fake_stanford(tmp_path/'src', BREEDS.split(','), n=10), BREEDS, tmp_path/'data'/'processed', quiet=True)
    return tmp_path


def run_cli(home, *args, timeout=300):
    "Run `dogft-run-all` with `$DOGFT_HOME=home` and a temp folder of its own in it (never a test runner's `IN_TEST`, never the shared data set)."
    env = {k: v for k, v in os.environ.items() if k not in ('IN_TEST', 'DOGFT_SOURCE')}
    (home/'tmp').mkdir(exist_ok=True)
    env.update(DOGFT_HOME=str(home), DOGFT_SHARED_DATA='none', HF_HUB_OFFLINE='1', TMPDIR=str(home/'tmp'))
    return subprocess.run([CMD, *map(str, args)], cwd=home, env=env, capture_output=True, text=True, timeout=timeout)


def test_errors_exit_2_before_any_run(home):
    "A bad model, strategy or parameter name: one line on stderr, exit status 2, no notebook executed."
    nb = standin_train_notebook(home/'standin.ipynb', STANDIN_PARAMS)
    for args, msg in [(['--models', 'resnet5o'], "Unknown model 'resnet5o'"),  # (more cases in-process, in nbs/03b_run_all.ipynb)
                      (['--weights', home/'missing.pth'], 'Weights file not found'),
                      (['--notebook', home/'nope.ipynb'], 'Train notebook not found'),
                      (['--set', 'label_smothing=0.1'], "unknown setting 'label_smothing' in --set")]:
        r = run_cli(home, '--notebook', nb, *args, '--skip-followups')
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('dogft-run-all: error: ') and msg in lines[0], (args, r.stderr)
    assert not (home/'results').exists()


@pytest.mark.skipif(not real_nb.exists(), reason='nbs/03_train.ipynb is not there yet')
def test_unknown_parameter_of_real_notebook():
    "Parameter names are checked against the real train notebook; the error lists the valid ones."
    valid = notebook_params(train_notebook())
    assert {'model', 'strategy', 'seed', 'epochs', 'out_dir'} <= set(valid)
    with pytest.raises(DogftError, match='Unknown train parameter.s. epoch: 03_train.ipynb takes model, strategy, seed'):
        check_params(train_notebook(), dict(epoch=1))


@pytest.mark.skipif(not has_train, reason='dogft.train is not there yet')
def test_failed_run_exit_1(home):
    "A run that raises is recorded (cell and error) and the matrix goes on; the command exits 1."
    nb = standin_train_notebook(home/'standin.ipynb', STANDIN_PARAMS, fail='freeze')
    r = run_cli(home, '--notebook', nb, '--models', 'efficientnet_lite0', '--strategies', 'freeze', '--seeds', '1,2',
                '--weights', 'none', '--breeds', BREEDS, '--skip-followups', '--set', 'views=2,drop_path=0.1')
    assert r.returncode == 1, r.stderr
    assert 'RuntimeError: boom: freeze cannot train' in r.stdout and '2 runs: 0 ran, 0 skipped, 2 failed' in r.stdout
    runs = home/'results'/'runs'
    assert sorted(p.name for p in runs.iterdir()) == ['efficientnet_lite0__freeze__s1.failed.ipynb',
                                                       'efficientnet_lite0__freeze__s2.failed.ipynb', 'summary.csv']
    injected = json.loads((runs/'efficientnet_lite0__freeze__s1.failed.ipynb').read_text())['metadata']['papermill']['parameters']
    assert injected == dict(model='efficientnet_lite0', strategy='freeze', seed=1, weights='none', breeds=BREEDS, views=2, drop_path=0.1)  # the settings given, typed


@pytest.mark.skipif(not (has_train and real_nb.exists()), reason='dogft.train / nbs/03_train.ipynb are not there yet')
def test_real_train_notebook_tiny_run(tmp_path):
    "In an empty home, one command prepares the data (`--source`) and makes one tiny real run of 03_train.ipynb (random init, 1 epoch, 64 px), its log a story; run again, it is skipped; `--force` trains again."
    home = tmp_path
    make_fake_stanford(home/'src', BREEDS.split(','), n=10)
    args = ['--models', 'efficientnet_lite0', '--strategies', 'freeze', '--seeds', 1, '--epochs', 1, '--weights', 'none', '--source', home/'src',
            '--img-size', 64, '--batch-size', 8, '--device', 'cpu', '--breeds', BREEDS, '--skip-followups']
    r = run_cli(home, *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout.splitlines()
    assert out[0].startswith('dogft-run-all: 1 run, efficientnet_lite0 × freeze × seed 1, in ') and out[1] == 'data: data/processed is missing: preparing it', out
    assert any(l.startswith('data: prepared in ') and l.endswith('data/processed, 20 images of 2 breeds') for l in out), out
    assert out[-1].startswith('dogft-run-all: done in ') and out[-1].endswith(': 1 ran, 0 skipped, 0 failed'), out[-1]
    assert (home/'results'/'runs'/'efficientnet_lite0__freeze__s1.ipynb').exists()
    assert not list((home/'results'/'runs').glob('*.failed.ipynb')) and not list((home/'results'/'runs').glob('.*'))
    m = json.loads((home/'results'/'metrics'/'efficientnet_lite0_freeze_s1_results.json').read_text())
    assert (m['model'], m['strategy'], m['seed']) == ('efficientnet_lite0', 'freeze', 1)
    assert (home/'models'/'efficientnet_lite0_freeze_s1_best.pth').exists()
    assert '1 run: 1 ran, 0 skipped, 0 failed' in r.stdout
    out = r.stdout.splitlines()  # the log tells the story: the run's start line, its epochs streamed from the kernel, indented, its end
    start = out.index('[1/1] efficientnet_lite0_freeze_s1: training, left: estimating (not timed yet: efficientnet_lite0 freeze)')
    end = next(i for i, l in enumerate(out) if l.startswith('[1/1] efficientnet_lite0_freeze_s1: ran in '))
    inner = out[start + 1:end]
    assert inner[0] == '    [efficientnet_lite0_freeze_s1] random init (--weights none): no pretrained features; freeze trains only the head on a random backbone: it cannot learn much', inner
    assert any(l.startswith('    [efficientnet_lite0_freeze_s1] epoch 1/1: train loss ') for l in inner), inner
    assert 'random init' in out[end] and 'test accuracy' in out[end], out[end]
    assert '\r' not in r.stdout and '<NA>' not in r.stdout and 'KeyboardInterrupt' not in r.stdout + r.stderr, r.stdout + r.stderr
    litter = [p.name for p in (home/'tmp').iterdir() if not p.name.startswith('torchinductor_')]  # torch's own cache folder aside
    assert not litter and {p.name for p in home.iterdir()} == {'src', 'data', 'results', 'models', 'tmp'}, litter  # nothing written elsewhere
    r = run_cli(home, *args)
    assert r.returncode == 0, r.stderr
    assert '1 run: 0 ran, 1 skipped, 0 failed' in r.stdout and 'finished before, skipped (test accuracy ' in r.stdout, r.stdout
    assert 'preparing' not in r.stdout and 'data: data/processed, 20 images of 2 breeds' in r.stdout.splitlines()  # the data is there now
    metrics = home/'results'/'metrics'/'efficientnet_lite0_freeze_s1_results.json'
    before = metrics.stat().st_mtime_ns
    r = run_cli(home, *args, '--force')
    assert r.returncode == 0 and '1 run: 1 ran, 0 skipped, 0 failed' in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert metrics.stat().st_mtime_ns != before, '--force must train again, not return the finished metrics'


@pytest.mark.skipif(not has_train, reason='dogft.train is not there yet')
def test_a_killed_runs_temporary_notebooks_are_removed_when_it_runs_again(home):
    "A `dogft-run-all` killed mid-run leaves hidden `.partial`/`.input` notebooks; running the run again removes them (not those of a live process)."
    nb = standin_train_notebook(home/'standin.ipynb', STANDIN_PARAMS)
    runs = home/'results'/'runs'
    runs.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, '-c', 'pass']); gone.wait()
    left = [runs/f'.efficientnet_lite0__freeze__s1.{gone.pid}.{k}.ipynb' for k in ('partial', 'input')]
    live = runs/f'.efficientnet_lite0__freeze__s1.{os.getpid()}.partial.ipynb'  # this process: still running
    for f in left + [live]: f.write_text('{}')
    r = run_cli(home, '--notebook', nb, '--models', 'efficientnet_lite0', '--strategies', 'freeze', '--seeds', '1',
                '--weights', 'none', '--breeds', BREEDS, '--skip-followups')
    assert 'efficientnet_lite0_freeze_s1: training' in r.stdout, r.stdout + r.stderr  # (the stand-in's metrics are not a real run's: it counts as failed)
    assert sorted(p.name for p in runs.iterdir()) == sorted([live.name, 'efficientnet_lite0__freeze__s1.ipynb', 'summary.csv'])


@pytest.mark.skipif(not has_train, reason='dogft.train is not there yet')
def test_a_run_another_process_trains_is_left_alone(home):
    "While another process holds a run's lock, `dogft-run-all` does not start it, names the holder's pid, runs the others, and exits 1 (a stand-in's run counts as failed too)."
    from dogft.core import held_lock
    from dogft.train import run_paths
    nb = standin_train_notebook(home/'standin.ipynb', STANDIN_PARAMS)
    lock = run_paths(TrainConfig(model='efficientnet_lite0', strategy='freeze', seed=1, out_dir=str(home)))['lock']
    with held_lock(lock, 'the run efficientnet_lite0_freeze_s1'):
        r = run_cli(home, '--notebook', nb, '--models', 'efficientnet_lite0', '--strategies', 'freeze', '--seeds', '1,2',
                    '--weights', 'none', '--breeds', BREEDS, '--skip-followups')
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert any(l.startswith(f'[1/2] efficientnet_lite0_freeze_s1: not run: the run efficientnet_lite0_freeze_s1 is in use by pid {os.getpid()} on ')
               for l in out), r.stdout
    assert not any('efficientnet_lite0_freeze_s1: training' in l for l in out) and '[2/2] efficientnet_lite0_freeze_s2: training, ' in r.stdout
    assert sorted(p.name for p in (home/'results'/'runs').iterdir()) == ['efficientnet_lite0__freeze__s2.ipynb', 'summary.csv']
    assert not (home/'results'/'metrics'/'efficientnet_lite0_freeze_s1_results.json').exists()


@pytest.mark.skipif(not (has_train and real_nb.exists()), reason='dogft.train / nbs/03_train.ipynb are not there yet')
def test_a_damaged_checkpoint_fails_its_run_in_one_line(home):
    "A run whose checkpoint is damaged fails with the train chapter's message — the file and how to go on — not a torch traceback."
    ck = home/'models'/'checkpoints'/'efficientnet_lite0_freeze_s1'
    ck.mkdir(parents=True)
    (ck/'last.pth').write_bytes(b'PK\x03\x04 cut short')
    r = run_cli(home, '--models', 'efficientnet_lite0', '--strategies', 'freeze', '--seeds', 1, '--epochs', 1, '--weights', 'none',
                '--img-size', 64, '--batch-size', 8, '--device', 'cpu', '--breeds', BREEDS, '--skip-followups')
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    line = next(l for l in r.stdout.splitlines() if l.startswith('[1/1] efficientnet_lite0_freeze_s1: failed in '))
    assert f"(FAILED at cell " in line and f": {ck/'last.pth'} cannot be read (damaged: " in line, line
    assert line.endswith('and no epoch_NNN.pth copy of it reads either: pass resume=False (dogft-train --no-resume) to train the run from the start; '
                         'see results/runs/efficientnet_lite0__freeze__s1.failed.ipynb)' + line.split('.failed.ipynb)')[1]), line
    assert 'Traceback' not in r.stdout and 'PytorchStreamReader' not in r.stdout.split('FAILED')[1].split('cannot be read')[0]
