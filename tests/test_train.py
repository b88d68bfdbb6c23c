"Training runs end to end: the CLI, resuming after kill -9, refusing to mix configurations, finished runs."
import json, os, re, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from dogft.core import DogftError
from dogft.testing import make_fake_stanford
from dogft.data import prepare_data, shared_stanford_dogs
from dogft.train import TrainConfig, train_run, run_paths, finished_metrics

BIN = Path(sys.executable).parent
BREEDS = ['beagle', 'boxer', 'toy_poodle']

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A tiny processed dataset: 12 images per breed (real ones when ../shared has them)."
    root = tmp_path_factory.mktemp('tiny')
    src = root/'source'
    if (shared := shared_stanford_dogs()) is not None:
        for b in BREEDS:
            (src/b).mkdir(parents=True)
            for f in sorted((shared/b).glob('*.jpg'))[:12]: (src/b/f.name).write_bytes(f.read_bytes())
    else: make_fake_stanford(src, BREEDS, n=12, layout='name')
    return prepare_data(src, BREEDS, root/'processed', quiet=True)

def _cfg(tiny, out, **kw):
    return TrainConfig(**dict(dict(model='efficientnet_lite0', data_dir=str(tiny), out_dir=str(out), img_size=64, batch_size=8,
                                   epochs=2, views=2, patience=5), **kw))

def _train_cli(cfg: TrainConfig, *extra):
    args = [str(BIN/'dogft-train'), '--model', cfg.model, '--strategy', cfg.strategy, '--epochs', str(cfg.epochs),
            '--img-size', str(cfg.img_size), '--batch-size', str(cfg.batch_size), '--data-dir', cfg.data_dir,
            '--out-dir', cfg.out_dir, '--patience', str(cfg.patience), *extra]
    return args

def test_freeze_run_writes_metrics_and_checkpoint(tiny, tmp_path, capsys):
    m = train_run(_cfg(tiny, tmp_path), quiet=True)
    assert capsys.readouterr().out == ''  # quiet: no progress bars, feature caching's included
    p = run_paths(_cfg(tiny, tmp_path))
    saved = json.loads(p['metrics'].read_text())
    assert saved['test_acc'] == m['test_acc'] and saved['class_names'] == BREEDS
    assert [h['epoch'] for h in saved['history']] == [1, 2]
    assert m['training']['features'] == 'cached' and m['params_trainable'] == 1280*3 + 3
    assert sum(map(sum, m['confusion_matrix'])) == m['n_images']['test'] == len(m['test_predictions'])
    best = torch.load(p['best'], weights_only=False)
    assert best['class_names'] == BREEDS and best['model'] == 'efficientnet_lite0' and 'state_dict' in best
    assert p['history'].exists() and not list(p['metrics'].parent.glob('.*.tmp'))
    assert finished_metrics(_cfg(tiny, tmp_path)) is not None
    assert finished_metrics(_cfg(tiny, tmp_path, lr=0.5)) is None  # another configuration is not finished

def test_finished_run_is_not_trained_again(tiny, tmp_path):
    cfg = _cfg(tiny, tmp_path)
    train_run(cfg, quiet=True)
    mtime = run_paths(cfg)['metrics'].stat().st_mtime_ns
    train_run(cfg, quiet=True)
    assert run_paths(cfg)['metrics'].stat().st_mtime_ns == mtime

def test_cached_and_uncached_freeze_agree(tiny, tmp_path):
    "Training the head on cached features is the same computation as training the whole frozen network."
    kw = dict(augment='none', precision='fp32', epochs=3)
    a = train_run(_cfg(tiny, tmp_path/'a', **kw), quiet=True)
    b = train_run(_cfg(tiny, tmp_path/'b', cache_features=False, **kw), quiet=True)
    assert b['training']['features'] == 'none'
    for ha, hb in zip(a['history'], b['history']):
        assert abs(ha['train_loss'] - hb['train_loss']) < 1e-3 and abs(ha['val_loss'] - hb['val_loss']) < 1e-3

def test_kill_and_resume(tiny, tmp_path):
    "A run killed with SIGKILL mid-way continues from its last checkpoint, with one history."
    cfg = _cfg(tiny, tmp_path, strategy='full', epochs=6, patience=10, cache_features=False, augment='none')
    last = run_paths(cfg)['checkpoints']/'last.pth'
    proc = subprocess.Popen(_train_cli(cfg, '--augment', 'none'), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    t0 = time.time()
    while time.time() - t0 < 300:
        if last.exists() and torch.load(last, weights_only=False)['epoch'] >= 2: break
        if proc.poll() is not None: pytest.fail(proc.stdout.read().decode()[-2000:])
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL); proc.wait()
    done = torch.load(last, weights_only=False)['epoch']
    assert 2 <= done < 6 and not run_paths(cfg)['metrics'].exists()
    out = subprocess.run(_train_cli(cfg, '--augment', 'none'), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f'[efficientnet_lite0_full_s42] resuming after epoch {done} of 6' in out.stdout
    m = json.loads(run_paths(cfg)['metrics'].read_text())
    assert [h['epoch'] for h in m['history']] == list(range(1, 7))

def test_checkpoint_of_another_configuration_is_refused(tiny, tmp_path):
    cfg = _cfg(tiny, tmp_path, strategy='full', epochs=1, cache_features=False)
    train_run(cfg, quiet=True)
    run_paths(cfg)['metrics'].unlink()  # as if killed before the end
    with pytest.raises(DogftError, match=r'other settings \(lr .*resume=False'):
        train_run(_cfg(tiny, tmp_path, strategy='full', epochs=1, cache_features=False, lr=1e-3), quiet=True)
    m = train_run(_cfg(tiny, tmp_path, strategy='full', epochs=1, cache_features=False, lr=1e-3, resume=False), quiet=True)
    assert m['config']['lr'] == 1e-3 and len(m['history']) == 1
    m = train_run(_cfg(tiny, tmp_path, strategy='full', epochs=1, cache_features=False, lr=3e-3), quiet=True)
    assert m['config']['lr'] == 3e-3  # the checkpoint left by a finished run of other settings is discarded, not refused

def test_cli_output_is_a_story_in_lines(tiny, tmp_path):
    "Written to a pipe, `dogft-train` says what it trains (random weights first), the feature caching, a line per epoch and its result, with no `\\r`; run again, that there is nothing to do and which flag trains again."
    cfg = _cfg(tiny, tmp_path, epochs=2)
    r = subprocess.run(_train_cli(cfg, '--weights', 'none'), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout.splitlines()
    assert '\r' not in r.stdout and 'RandomInitWarning' not in r.stderr, r.stdout + r.stderr  # said once, in words, not as a Python warning
    tag = '[efficientnet_lite0_freeze_s42]'
    assert out[0] == f'{tag} random init (--weights none): no pretrained features; freeze trains only the head on a random backbone: it cannot learn much'
    assert out[1].startswith(f'{tag} freeze, 2 epochs at lr 1e-03 (dogft recipe, batch 8) on ') and out[1].endswith('3 breeds, 24 training / 6 validation / 6 test images'), out[1]
    epochs = [i for i, l in enumerate(out) if l.startswith(f'{tag} epoch ')]
    caching = [i for i, l in enumerate(out) if l.startswith('caching features of 24 training images × 4 views, 6 validation and 6 test images')]
    assert len(epochs) == 2 and caching and caching[-1] < epochs[0], out
    assert out[epochs[0]].startswith(f'{tag} epoch 1/2: train loss ') and ', val acc ' in out[epochs[0]], out[epochs[0]]
    assert out[-1].startswith(f'{tag} test accuracy ') and out[-1].endswith(f"s — random init; wrote {run_paths(cfg)['metrics']}"), out[-1]
    r = subprocess.run(_train_cli(cfg, '--weights', 'none'), capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == f'{tag} finished with these settings: nothing to do (--no-resume, or resume=False, trains it again)\n', r.stdout


def test_cli_bad_input_is_one_line(tiny, tmp_path):
    out = subprocess.run(_train_cli(_cfg(tiny, tmp_path, strategy='half')), capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith('dogft-train: error: Unknown strategy')
    out = subprocess.run(_train_cli(_cfg(tiny, tmp_path, model='resnet_51')), capture_output=True, text=True)
    assert out.returncode == 2 and 'resnet51' in out.stderr.splitlines()[-1]

def test_committed_runs_are_finished_with_their_settings():
    "A committed run's key is the key its settings make now (with its split), so that `dogft-run-all` on that split skips it: keys are compared as they are."
    import dataclasses
    from dogft.train import resolve_config, run_key, _key_diff
    root = Path(__file__).resolve().parents[1]
    files = [f for home in ('examples', 'bench') for f in sorted(root.glob(f'{home}/*/results/metrics/*_results.json')) if '_zero-shot_' not in f.name]
    if not files: pytest.skip('no committed runs')
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for f in files:
        m = json.loads(f.read_text())
        now = run_key(resolve_config({k: v for k, v in m['config'].items() if k in names}), m['key']['split_sha256'])
        assert m['key'] == now, f"{f.relative_to(root)}: its key differs from its settings' ({_key_diff(m['key'], now)})"


def test_notebook_parameters_are_the_config_fields():
    "The train notebook's papermill parameters are exactly `TrainConfig`'s fields, and papermill can parse them."
    import dataclasses
    from dogft.run_all import notebook_params, train_notebook
    assert set(notebook_params(train_notebook())) == {f.name for f in dataclasses.fields(TrainConfig)}

def test_tensorboard_logging(tiny, tmp_path, capsys):
    "With `tensorboard`, the run logs its curves in results/tensorboard/<run>/ and its first lines say where, and how to look at them."
    pytest.importorskip('tensorboard')
    cfg = _cfg(tiny, tmp_path, epochs=1, tensorboard=True)
    train_run(cfg)
    assert list(run_paths(cfg)['tensorboard'].rglob('events.out.tfevents.*'))
    tb = run_paths(cfg)['tensorboard']
    assert f"[efficientnet_lite0_freeze_s42] tensorboard logs: {tb}/ (view: tensorboard --logdir {tb.parent})" in capsys.readouterr().out.splitlines()[:3]


def test_seed_recipe_run(tiny, tmp_path):
    "The seed recipe: random head, BatchNorm in train mode, the whole network every epoch in float32, no early stop; its own files."
    cfg = _cfg(tiny, tmp_path, recipe='seed', patience=None, epochs=2)
    m = train_run(cfg, quiet=True)
    assert run_paths(cfg)['metrics'].name == 'efficientnet_lite0_freeze_seed-recipe_s42_results.json'
    assert m['recipe'] == 'seed' and m['training']['features'] == 'none' and m['precision'] == 'float32'
    assert (m['config']['head_init'], m['config']['bn'], m['config']['patience']) == ('random', 'train', 0)
    assert m['epochs_run'] == 2 and 'warm_start' not in m['training']
    dogft = train_run(_cfg(tiny, tmp_path), quiet=True)  # the dogft recipe's run beside it, in its own files
    assert dogft['recipe'] == 'dogft' and dogft['config']['bn'] == 'eval' and dogft['training']['features'] == 'cached'
    assert len(list((tmp_path/'results'/'metrics').glob('*_results.json'))) == 2


def test_warm_start_starts_from_the_freeze_run(tiny, tmp_path):
    "A partial run with `warm_start` starts from the best weights of its freeze run, trained first when missing (lr 1e-9 keeps them)."
    from unittest.mock import patch
    from dogft.train import RECIPES, finished_metrics, resolve_config, warm_start_config
    cfg = _cfg(tiny, tmp_path, strategy='partial', lr=1e-9, epochs=1)
    m = train_run(cfg, quiet=True)
    w = warm_start_config(resolve_config(cfg))
    head = json.loads(run_paths(w)['metrics'].read_text())  # the freeze run exists now, as a run of its own
    assert m['training']['warm_start'] == dict(run='efficientnet_lite0_freeze_s42', seconds=head['train_seconds'])
    assert m['train_seconds'] >= head['train_seconds'] and head['best_epoch'] >= 1
    start = torch.load(run_paths(w)['best'], weights_only=False)['state_dict']
    end = torch.load(run_paths(cfg)['best'], weights_only=False)['state_dict']
    assert all(torch.allclose(start[k].float(), end[k].float(), atol=1e-6) for k in start)
    assert finished_metrics(cfg) is not None
    with patch.dict(RECIPES['dogft']['per_strategy'], freeze=dict(precision='bf16')):  # the freeze run it started from is another run now
        assert finished_metrics(cfg) is None  # so the partial run built on it is not finished either
    run_paths(cfg)['metrics'].unlink(); run_paths(w)['metrics'].unlink()  # killed before the end; the freeze run's results lost
    again = train_run(cfg, quiet=True)  # resumes from the checkpoint, which says where the run started
    assert again['training']['warm_start'] == m['training']['warm_start'] and not run_paths(w)['metrics'].exists()
    cold = train_run(_cfg(tiny, tmp_path/'cold', strategy='partial', lr=1e-9, epochs=1, warm_start=False), quiet=True)
    assert 'warm_start' not in cold['training'] and not run_paths(_cfg(tiny, tmp_path/'cold'))['metrics'].exists()
    assert cold['test_loss'] != m['test_loss']  # the ImageNet head's rows, not the trained head


def test_drop_path_is_a_partial_setting_that_shares_the_freeze_run(tiny, tmp_path):
    "`dogft-train --set drop_path=0.2` trains partial with stochastic depth from the same freeze run as without it; the setting is in the run's key."
    from dogft.train import resolve_config, warm_start_config
    cfg = _cfg(tiny, tmp_path, strategy='partial', epochs=1)
    r = subprocess.run(_train_cli(cfg, '--set', 'views=2', '--set', 'drop_path=0.2'), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads(run_paths(cfg)['metrics'].read_text())
    assert m['config']['drop_path'] == 0.2 and m['key']['drop_path'] == 0.2 and m['key']['starts_from']['drop_path'] == 0.0
    assert finished_metrics(cfg) is None and finished_metrics(_cfg(tiny, tmp_path, strategy='partial', epochs=1, drop_path=0.2)) is not None
    w = run_paths(warm_start_config(resolve_config(cfg)))['metrics']
    mtime = w.stat().st_mtime_ns
    plain = train_run(cfg, quiet=True)  # without stochastic depth: the same freeze run, not trained again
    assert w.stat().st_mtime_ns == mtime and plain['training']['warm_start'] == m['training']['warm_start']
    r = subprocess.run(_train_cli(cfg, '--set', 'views=2,drop_path=1'), capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count('\n') == 0 and 'drop_path' in r.stderr


def test_label_smoothing_is_the_loss_trained_and_stopped_on(tiny, tmp_path):
    "With `label_smoothing`, the validation loss (early stopping's, the best checkpoint's) is label-smoothed cross-entropy."
    import torch.nn.functional as F
    from dogft.loaders import get_test_dl
    from dogft.models import imagenet_zero_shot
    from dogft.train import predict_probs
    cfg = _cfg(tiny, tmp_path, epochs=1, label_smoothing=0.2, augment='none', precision='fp32')
    m = train_run(cfg, quiet=True)
    assert m['config']['label_smoothing'] == 0.2
    best = torch.load(run_paths(cfg)['best'], weights_only=False)
    net = imagenet_zero_shot('efficientnet_lite0', m['class_names'], 'auto')
    net.load_state_dict(best['state_dict'])
    probs, targs = predict_probs(net, get_test_dl(tiny, best['data_config'], split='val', verbose=False))
    smoothed = float(F.cross_entropy(probs.log(), targs, label_smoothing=0.2))
    assert abs(m['history'][0]['val_loss'] - smoothed) < 1e-4
    assert abs(smoothed - float(F.cross_entropy(probs.log(), targs))) > 1e-3  # so plain cross-entropy would fail the line above


def test_a_clone_retrains_the_freeze_run_whose_weights_are_missing(tiny, tmp_path):
    "A clone of the repository has metrics files but no weights: retraining partial trains its freeze run again instead of failing."
    from dogft.train import resolve_config, warm_start_config
    cfg = _cfg(tiny, tmp_path, strategy='partial', epochs=1)
    train_run(cfg, quiet=True)
    w = run_paths(warm_start_config(resolve_config(cfg)))
    w['best'].unlink()  # what a clone has: results/metrics committed, models/*.pth not
    first = w['metrics'].stat().st_mtime_ns
    m = train_run(_cfg(tiny, tmp_path, strategy='partial', epochs=1, resume=False), quiet=True)
    assert w['best'].exists() and w['metrics'].stat().st_mtime_ns > first and m['training']['warm_start']['run'] == 'efficientnet_lite0_freeze_s42'


def test_zero_shot_row_depends_on_model_weights_and_split_only(tiny, tmp_path):
    "The zero-shot metrics are reused whatever training settings come later; another split makes them again."
    from dogft.train import zero_shot_run
    m = zero_shot_run(data_dir=str(tiny), out_dir=str(tmp_path), quiet=True)
    assert set(m['key']) == {'model', 'strategy', 'weights', 'split_sha256'} and m['strategy'] == 'zero-shot'
    f = tmp_path/'results'/'metrics'/'efficientnet_lite0_zero-shot_s0_results.json'
    mtime = f.stat().st_mtime_ns
    assert zero_shot_run(data_dir=str(tiny), out_dir=str(tmp_path), quiet=True)['key'] == m['key'] and f.stat().st_mtime_ns == mtime
    import hashlib
    kept = {f: (tiny/f).read_bytes() for f in ('split.csv', 'stamp.json')}
    (tiny/'split.csv').write_bytes(kept['split.csv'] + b'\n')  # the split file changes, as a rebuild would change it: its stamp with it
    stamp = json.loads(kept['stamp.json'])
    if 'split_sha256' in stamp: (tiny/'stamp.json').write_text(json.dumps(stamp | dict(split_sha256=hashlib.sha256(kept['split.csv'] + b'\n').hexdigest())))
    try: assert zero_shot_run(data_dir=str(tiny), out_dir=str(tmp_path), quiet=True)['key']['split_sha256'] != m['key']['split_sha256']
    finally:
        for f,b in kept.items(): (tiny/f).write_bytes(b)


def test_ema_average_is_validated_kept_and_resumed(tiny, tmp_path, monkeypatch):
    "With `ema`, each epoch validates the weight average, the best checkpoint holds it, and a resumed run continues it."
    import dogft.train as dt
    from dogft.loaders import get_test_dl
    from dogft.models import imagenet_zero_shot
    cfg = _cfg(tiny, tmp_path, epochs=3, ema=0.9, lr=1e-2, augment='none', precision='fp32', patience=0)
    after_epoch = dt.RunCheckpoint.after_epoch
    def interrupted_after_two(self):
        after_epoch(self)
        if self.start + self.epoch + 1 == 2: raise KeyboardInterrupt
    monkeypatch.setattr(dt.RunCheckpoint, 'after_epoch', interrupted_after_two)
    with pytest.raises(KeyboardInterrupt): train_run(cfg, quiet=True)
    monkeypatch.undo()
    last = torch.load(run_paths(cfg)['checkpoints']/'last.pth', weights_only=False)
    net = imagenet_zero_shot('efficientnet_lite0', BREEDS, 'auto')
    dl = get_test_dl(tiny, torch.load(run_paths(cfg)['best'], weights_only=False)['data_config'], split='val', verbose=False)
    def val_loss(sd):
        net.load_state_dict(sd)
        probs, targs = dt.predict_probs(net, dl)
        return float(torch.nn.functional.nll_loss(probs.log(), targs))
    assert abs(val_loss(last['ema']) - last['history'][-1]['val_loss']) < 1e-4  # the epoch validated the average ...
    assert abs(val_loss(last['model']) - last['history'][-1]['val_loss']) > 1e-3  # ... not the weights it trained
    seen = []
    class Spy(dt.EmaWeights):
        def before_fit(self): super().before_fit(); seen.append({k: v.clone() for k, v in self.averaged().items()})
    monkeypatch.setattr(dt, 'EmaWeights', Spy)
    m = train_run(cfg, quiet=True)
    assert len(seen) == 1 and all(torch.equal(seen[0][k], v) for k, v in last['ema'].items())  # the average went on from the saved one
    assert [h['epoch'] for h in m['history']] == [1, 2, 3] and m['history'][:2] == last['history']
    best = torch.load(run_paths(cfg)['best'], weights_only=False)
    assert abs(val_loss(best['state_dict']) - m['history'][best['epoch'] - 1]['val_loss']) < 1e-4


def test_lr_find_suggests_and_keeps_nothing(tiny, tmp_path):
    "`dogft-train --lr-find` prints fastai's suggestions and the recipe's lr, and leaves no run files; partial's finder starts from its freeze run."
    from dogft.train import find_lr, resolve_config, warm_start_config
    out = subprocess.run(_train_cli(_cfg(tiny, tmp_path)) + ['--lr-find'], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    line = out.stdout.strip().splitlines()[-1]
    assert 'learning-rate finder, efficientnet_lite0_freeze_s42: valley ' in line and "(the recipe's lr: 1.0e-03); nothing trained" in line
    assert not (tmp_path/'results').exists() and not (tmp_path/'models').exists()
    cfg = _cfg(tiny, tmp_path/'p', strategy='partial')
    found = find_lr(cfg, quiet=True)
    assert found['lr'] == 1e-4 and len(found['lrs']) == len(found['losses']) > 10
    assert run_paths(warm_start_config(resolve_config(cfg)))['best'].exists() and not run_paths(cfg)['metrics'].exists()


def _interrupted_after(monkeypatch, k):
    "Make `RunCheckpoint` stop the fit (as a kill would) once it has saved epoch `k`."
    import dogft.train as dt
    after_epoch = dt.RunCheckpoint.after_epoch
    def interrupted(self):
        after_epoch(self)
        if self.start + self.epoch + 1 == k: raise KeyboardInterrupt
    monkeypatch.setattr(dt.RunCheckpoint, 'after_epoch', interrupted)


@pytest.mark.parametrize('strategy', ['freeze', 'partial'])
def test_resume_is_the_same_run(tiny, tmp_path, monkeypatch, strategy):
    "A run stopped after epoch 2 and resumed has the history and the weights of the same run left to finish: every random state is restored (shuffling, the cached views, augmentation, dropout, the smoothed loss)."
    kw = dict(strategy=strategy, epochs=4, patience=0, precision='fp32', warm_start=False, views=3, augment='light', lr=3e-3)
    whole = train_run(_cfg(tiny, tmp_path/'whole', **kw), quiet=True)
    _interrupted_after(monkeypatch, 2)
    cfg = _cfg(tiny, tmp_path/'resumed', **kw)
    with pytest.raises(KeyboardInterrupt): train_run(cfg, quiet=True)
    monkeypatch.undo()
    resumed = train_run(cfg, quiet=True)
    assert resumed['training']['features'] == 'cached' and [h['epoch'] for h in resumed['history']] == [1, 2, 3, 4]
    for a, b in zip(whole['history'], resumed['history']):
        for k in ('train_loss', 'train_acc', 'val_loss', 'val_acc', 'lr'): assert abs(a[k] - b[k]) <= 1e-6, (a, b)
    wa, wb = (torch.load(run_paths(_cfg(tiny, tmp_path/d, **kw))['checkpoints']/'last.pth', weights_only=False)['model'] for d in ('whole', 'resumed'))
    assert max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa) <= 1e-6


def test_a_run_killed_while_caching_features_resumes_there(tiny, tmp_path, monkeypatch, capsys):
    "A run stopped in the middle of caching its features keeps the batches it committed: run again, it computes only the rest, and it is the same run as one never stopped."
    import dogft.features as df
    kw = dict(strategy='freeze', epochs=2, patience=0, views=3, augment='light')
    whole = train_run(_cfg(tiny, tmp_path/'whole', **kw), quiet=True)
    commit,calls = df.FeatureStore.commit,[]
    def killed(self, i, rows, dtype):
        commit(self, i, rows, dtype); calls.append(i)
        if i == 2: raise KeyboardInterrupt  # after two passes (two views of the training images) and the first batch of the third
    monkeypatch.setattr(df.FeatureStore, 'commit', killed)
    monkeypatch.setattr(df, 'COMMIT_SECONDS', 0.)  # commit every batch
    cfg = _cfg(tiny, tmp_path/'resumed', **kw)
    with pytest.raises(KeyboardInterrupt): train_run(cfg, quiet=True)
    monkeypatch.undo()
    store = run_paths(cfg)['checkpoints']/'features'
    done = json.loads((store/'pass2.json').read_text())['rows']
    assert json.loads((store/'pass0.json').read_text())['rows'] == json.loads((store/'pass1.json').read_text())['rows'] > done > 0
    capsys.readouterr()
    resumed = train_run(cfg)
    out = capsys.readouterr().out
    assert f"images done before)" in out, out
    assert not store.exists()  # removed when the run ended
    for a, b in zip(whole['history'], resumed['history']):
        for k in ('train_loss', 'val_loss', 'val_acc'): assert abs(a[k] - b[k]) <= 1e-6, (a, b)
    assert resumed['test_acc'] == whole['test_acc'] and resumed['training']['engine'] == 'onnxruntime'


def test_a_second_process_on_the_same_run_stops(tiny, tmp_path):
    "While one process holds a run, `dogft-train` of the same run in another stops at once, naming the holder's pid, and touches none of its files."
    from dogft.core import held_lock
    cfg = _cfg(tiny, tmp_path, epochs=1)
    train_run(cfg, quiet=True)
    p = run_paths(cfg)
    p['metrics'].unlink()  # as if it were being trained again
    files = {f: f.stat().st_mtime_ns for f in tmp_path.rglob('*') if f.is_file() and f != p['lock']}
    with held_lock(p['lock'], 'the run efficientnet_lite0_freeze_s42'):
        r = subprocess.run(_train_cli(cfg), capture_output=True, text=True)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f'dogft-train: error: the run efficientnet_lite0_freeze_s42 is in use by pid {os.getpid()} on '), r.stderr
    assert {f: f.stat().st_mtime_ns for f in tmp_path.rglob('*') if f.is_file() and f != p['lock']} == files
    assert train_run(cfg, quiet=True)['history'][0]['epoch'] == 1  # free again: it trains


def _truncate(f: Path): f.write_bytes(f.read_bytes()[:1000])


def test_a_damaged_last_checkpoint_resumes_from_the_newest_intact_copy(tiny, tmp_path, monkeypatch, capsys):
    "A truncated `last.pth` is named, and the run resumes from the newest `epoch_NNN.pth` that reads; with none left, a one-line error says how to go on."
    cfg = _cfg(tiny, tmp_path, epochs=11, patience=0)
    _interrupted_after(monkeypatch, 10)
    with pytest.raises(KeyboardInterrupt): train_run(cfg, quiet=True)
    monkeypatch.undo()
    ck = run_paths(cfg)['checkpoints']
    assert sorted(f.name for f in ck.iterdir()) == ['epoch_005.pth', 'epoch_010.pth', 'features', 'last.pth']  # the cached features stay until the run ends
    _truncate(ck/'last.pth'); _truncate(ck/'epoch_010.pth')
    capsys.readouterr()
    m = train_run(cfg)
    out = capsys.readouterr().out
    assert f"[efficientnet_lite0_freeze_s42] {ck/'last.pth'} cannot be read (damaged: " in out, out
    assert f"epoch_010.pth cannot be read either; resuming from epoch_005.pth, the newest intact copy" in out, out
    assert '[efficientnet_lite0_freeze_s42] resuming after epoch 5 of 11' in out and [h['epoch'] for h in m['history']] == list(range(1, 12))
    run_paths(cfg)['metrics'].unlink()
    for f in ck.iterdir(): _truncate(f)
    with pytest.raises(DogftError) as e: train_run(cfg, quiet=True)
    msg = str(e.value)
    assert msg.startswith(f"{ck/'last.pth'} cannot be read (damaged: ") and msg.endswith(
        'and no epoch_NNN.pth copy of it reads either: pass resume=False (dogft-train --no-resume) to train the run from the start'), msg
    assert '\n' not in msg and len(train_run(_cfg(tiny, tmp_path, epochs=11, patience=0, resume=False), quiet=True)['history']) == 11


def test_damaged_weights_to_start_from_are_named(tiny, tmp_path):
    "A partial run whose freeze run's best weights are damaged says which file and how to go on, instead of a torch traceback."
    from dogft.train import resolve_config, warm_start_config
    cfg = _cfg(tiny, tmp_path, strategy='partial', epochs=1)
    train_run(cfg, quiet=True)
    w = run_paths(warm_start_config(resolve_config(cfg)))
    _truncate(w['best'])
    with pytest.raises(DogftError, match='^' + re.escape(f"{w['best']} cannot be read (damaged: ") + '.*' + re.escape('): delete it and run this again')):
        train_run(_cfg(tiny, tmp_path, strategy='partial', epochs=1, resume=False), quiet=True)


def test_export_names_a_damaged_best_checkpoint(tiny, tmp_path):
    "`dogft-export`'s model loader says which best checkpoint is damaged and how to go on, instead of a torch traceback."
    from dogft.export import load_run_model
    from dogft.testing import make_fake_run
    best = tmp_path/'models'/f'{make_fake_run(tmp_path, tiny)}_best.pth'
    assert load_run_model(best)[1]['class_names'] == BREEDS
    _truncate(best)
    with pytest.raises(DogftError, match='^' + re.escape(f'{best} cannot be read (damaged: PytorchStreamReader failed reading zip archive') 
                       + re.escape(': failed finding central directory): train the run again (dogft-train ... --no-resume), or export another run (dogft-export --run NAME)') + '$'):
        load_run_model(best)
