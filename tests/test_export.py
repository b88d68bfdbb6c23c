"Export and predict end to end: the console scripts, the parity gate refusing a broken export, the predictor's bad inputs, no torch in the predictor, and the real lite0 model on the shared photos."
import json, os, subprocess, sys, textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dogft.core import DogftError
from dogft.testing import break_onnx, make_fake_run, make_fake_stanford
from dogft.data import prepare_data, read_split, shared_stanford_dogs
import dogft.export as ex
from dogft.core import decode_metadata
from dogft.predict import Classifier

BIN = Path(sys.executable).parent
MODEL = 'test_efficientnet'

def run(*args, home=None, **kw):
    env = {**os.environ, 'DOGFT_HOME': str(home)} if home else dict(os.environ)
    env.pop('IN_TEST', None)
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=600, **kw)

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A root with a tiny processed dataset and one random-initialised `test_efficientnet` run at 64 px."
    root = tmp_path_factory.mktemp('tiny')
    breeds = ('beagle', 'boxer', 'toy_poodle')
    data = prepare_data(make_fake_stanford(root/'src', breeds, n=10, layout='name'), ','.join(breeds), root/'data'/'processed', quiet=True)
    name = make_fake_run(root, data, MODEL, 'freeze', 0)
    return root, data, name

@pytest.fixture(scope='module')
def exported(tiny, tmp_path_factory):
    "A copy of the tiny root after `dogft-export` (tests only read it)."
    import shutil
    root, data, name = tiny
    dst = tmp_path_factory.mktemp('exported')/'root'
    shutil.copytree(root, dst, symlinks=True)
    r = run(BIN/'dogft-export', '--out-dir', dst, '--repeats', '1')
    assert r.returncode == 0, r.stdout + r.stderr
    return dst, name, r

def test_cli_export_writes_model_and_report(exported):
    root, name, r = exported
    f,own = root/'models'/f'best_model_{MODEL}.onnx',root/'models'/f'{name}.onnx'
    rep = json.loads((root/'models'/'export_report.json').read_text())
    assert rep['status'] == 'passed' and rep['run'] == name and 'PASSED' in r.stdout
    assert r.stdout.startswith(f"dogft-export: exporting {name}: the model to ship (test_efficientnet / freeze: ") and r.stdout.count('model to ship') == 1
    assert rep['fp32']['file'] == str(own) and rep['fp32']['ship_file'] == str(f) and rep['fp32']['bytes'] == f.stat().st_size == own.stat().st_size
    assert rep['ships'] and rep['fp32']['replaced'] == {str(own): None, str(f): None}
    assert f"→ {own} (new)" in r.stdout and f"→ {f} (new)" in r.stdout, r.stdout  # says which files it wrote
    assert rep['opset'] == rep['fp32']['opset'] == ex.onnx_opset(f) == 17
    assert rep['fp32']['max_abs_logit_diff'] <= 1e-4 and rep['fp32']['top1_agreement'] == 1.0
    assert set(rep['latency_ms']['batch_1']) == {'pytorch', 'onnx_fp32'} and rep['threads'] >= 1
    assert not list((root/'models').glob('.export-*')) and not (root/'models'/f'best_model_{MODEL}.int8.onnx').exists()

def test_metadata_round_trip(exported, tiny):
    import torch
    root, name, _ = exported
    ck = torch.load(root/'models'/f'{name}_best.pth', weights_only=False)
    meta = Classifier(root/'models'/f'best_model_{MODEL}.onnx').meta
    assert meta['class_names'] == ck['class_names'] and meta['run'] == name and meta['model'] == MODEL
    assert meta == {**meta, **ex.export_data_config(ck['data_config'])} and meta['precision'] == 'fp32' and meta['opset'] == 17

def test_opset_14_is_what_the_file_says(tiny, tmp_path):
    import shutil
    root = tmp_path/'root'
    shutil.copytree(tiny[0], root, symlinks=True)
    rep = ex.export_model(out_dir=root, opset=14, repeats=1, quiet=True)
    assert rep['opset'] == rep['fp32']['opset'] == ex.onnx_opset(rep['fp32']['file']) == 14

def test_broken_export_fails_the_gate(tiny, tmp_path, monkeypatch):
    "A graph with one weight tensor changed after simplification fails the gate and is not named best_model_*."
    import shutil
    root = tmp_path/'root'
    shutil.copytree(tiny[0], root, symlinks=True)
    good = ex.simplify_onnx
    monkeypatch.setattr(ex, 'simplify_onnx', lambda mp: break_onnx(good(mp)))
    with pytest.raises(ex.ExportGateError, match='parity gate') as e: ex.dogft_export(out_dir=str(root), repeats=1)
    assert e.value.report['status'] == 'failed' and e.value.report['fp32']['file'] is None
    assert not list((root/'models').glob('*.onnx')) and not list((root/'models').glob('.export-*'))
    assert json.loads((root/'models'/'export_report.json').read_text())['status'] == 'failed'

def test_cli_gate_failure_exits_1(tiny, tmp_path):
    "As a command, a failed gate prints the report and exits 1 (here: a limit no export can meet)."
    import shutil
    root = tmp_path/'root'
    shutil.copytree(tiny[0], root, symlinks=True)
    script = tmp_path/'strict_export.py'
    script.write_text("import dogft.export as e\ne.LIMITS['max_abs_logit_diff'] = -1.0\ne.dogft_export()\n")
    r = run(sys.executable, script, '--out-dir', root, '--repeats', '1')
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'FAIL' in r.stdout and not list((root/'models').glob('*.onnx'))

def test_cli_errors_exit_2(tmp_path):
    r = run(BIN/'dogft-export', '--out-dir', tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith('dogft-export: error: no finished run'), r.stderr
    with pytest.raises(DogftError, match='int8'): ex.dogft_export(out_dir=str(tmp_path), quantize='int4')
    with pytest.raises(DogftError, match='dogft-train'): ex.dogft_export(out_dir=str(tmp_path))

def test_export_named_run_keeps_the_model_to_ship(exported, tmp_path):
    "Issue 26: `dogft-export --run X` writes X's own file and leaves best_model_* (dogft-predict's default) alone unless X is the model to ship; a replaced file is named."
    import shutil
    src, name, _ = exported
    root = tmp_path/'root'
    shutil.copytree(src, root, symlinks=True)
    ship,before = root/'models'/f'best_model_{MODEL}.onnx',(root/'models'/f'best_model_{MODEL}.onnx').read_bytes()
    other = make_fake_run(root, root/'data'/'processed', MODEL, 'freeze', 1, val_acc=0.2)  # a worse seed: not the model to ship
    r = run(BIN/'dogft-export', '--out-dir', root, '--run', other, '--repeats', '1')
    assert r.returncode == 0, r.stdout + r.stderr
    assert ship.read_bytes() == before and (root/'models'/f'{other}.onnx').exists()
    assert f"(not the model to ship, {name})" in r.stdout and f"best_model_{MODEL}.* left as they were" in r.stdout, r.stdout
    rep = json.loads((root/'models'/'export_report.json').read_text())
    assert (rep['run'], rep['ships'], rep['model_to_ship'], rep['fp32']['ship_file']) == (other, False, name, None)
    img = _images(tmp_path/'imgs')['good'][0]
    assert json.loads(run(BIN/'dogft-predict', img, '--json', home=root).stdout)['model'] == str(ship)  # still the model to ship answers
    shutil.copy(root/'models'/f'{other}.onnx', ship)  # what `dogft-export --run` used to leave behind
    r = run(BIN/'dogft-export', '--out-dir', root, '--run', name, '--repeats', '1')
    assert r.returncode == 0 and f"→ {ship} (replaced run {other}'s export of " in r.stdout, r.stdout
    assert f"→ {root/'models'/f'{name}.onnx'} (replaced this run's export of " in r.stdout, r.stdout
    rep = json.loads((root/'models'/'export_report.json').read_text())
    assert rep['ships'] and rep['fp32']['replaced'][str(ship)]['run'] == other
    assert Classifier(ship).meta['run'] == name

def test_int8_failing_gate_keeps_fp32(tiny, tmp_path):
    import shutil
    root = tmp_path/'root'
    shutil.copytree(tiny[0], root, symlinks=True)
    rep = ex.export_model(out_dir=root, quantize='int8', repeats=1, calib_images=8, limits=dict(max_int8_acc_drop_points=-101), quiet=True)  # no int8 can be 101 points better
    assert rep['status'] == 'failed' and rep['fp32']['passed'] and not rep['int8']['passed']
    assert sorted(p.name for p in (root/'models').glob('best_model_*')) == [f'best_model_{MODEL}.onnx']
    assert rep['int8']['bytes'] < rep['fp32']['bytes'] and rep['int8']['quant_format'] == 'QDQ'

# --- the predictor

def _images(d:Path)->dict:
    "Good images in several formats and modes, and bad files."
    d.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    arr = lambda w, h: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    good = {'rgb.jpg': ('RGB', 'JPEG', (640, 480)), 'gray.png': ('L', 'PNG', (50, 300)), 'cmyk.jpg': ('CMYK', 'JPEG', (333, 222)),
            'rgba.png': ('RGBA', 'PNG', (100, 100)), 'pic.webp': ('RGB', 'WEBP', (1200, 90)), 'pal.png': ('P', 'PNG', (70, 70))}
    for n,(mode,fmt,size) in good.items(): Image.fromarray(arr(*size)).convert(mode).save(d/n, fmt)
    (d/'notes.txt').write_text('hello')
    (d/'empty.jpg').write_bytes(b'')
    (d/'cut.jpg').write_bytes((d/'rgb.jpg').read_bytes()[:500])
    (d/'folder.png').mkdir(exist_ok=True)
    bad = ['notes.txt', 'empty.jpg', 'cut.jpg', 'folder.png', 'missing.jpg']
    return dict(good=[d/n for n in good], bad=[d/n for n in bad])

def test_predict_json_good_and_bad_files(exported, tmp_path):
    root, name, _ = exported
    im = _images(tmp_path/'imgs')
    files = [im['good'][0], *im['bad'], *im['good'][1:]]
    r = run(BIN/'dogft-predict', *files, '--json', '--top-k', '2', home=root)
    assert r.returncode == 1, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert [l['path'] for l in lines] == [str(f) for f in files]
    for l,f in zip(lines, files):
        if f in im['good']:
            assert len(l['top']) == 2 and l['top'][0]['prob'] >= l['top'][1]['prob'] and l['top'][0]['breed'] in ('beagle', 'boxer', 'toy_poodle')
        else: assert 'error' in l and 'top' not in l, l
    errs = {Path(l['path']).name: l['error'] for l in lines if 'error' in l}
    assert errs['missing.jpg'] == 'no such file' and 'not an image' in errs['notes.txt'] and 'directory' in errs['folder.png']
    assert 'truncated' in errs['cut.jpg'] or 'corrupt' in errs['cut.jpg']
    assert {l['model'] for l in lines} == {str(root/'models'/f'best_model_{MODEL}.onnx')}  # every JSON line says which model answered
    r = run(BIN/'dogft-predict', *im['good'], home=root)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1 + len(im['good']) and '%' in r.stdout, r.stderr
    assert r.stdout.splitlines()[0] == f'model: $DOGFT_HOME/models/best_model_{MODEL}.onnx'
    r = run(BIN/'dogft-predict', im['good'][0], home=root, cwd=root)
    assert r.stdout.splitlines()[0] == f'model: models/best_model_{MODEL}.onnx', r.stdout

def test_predict_default_model_is_the_newest_file(exported, tmp_path):
    "What --help says: the most recently modified best_model_*.onnx answers, int8 or fp32."
    import shutil
    root, name, _ = exported
    home = tmp_path/'home'
    shutil.copytree(root/'models', home/'models')
    fp32,int8 = home/'models'/f'best_model_{MODEL}.onnx',home/'models'/f'best_model_{MODEL}.int8.onnx'
    shutil.copy(fp32, int8)
    img = _images(tmp_path/'imgs')['good'][0]
    for newer,older in [(int8, fp32), (fp32, int8)]:
        os.utime(older, ns=(1_700_000_000*10**9,)*2); os.utime(newer, ns=(1_700_000_100*10**9,)*2)
        r = run(BIN/'dogft-predict', img, '--json', home=home)
        assert r.returncode == 0 and json.loads(r.stdout)['model'] == str(newer), r.stdout + r.stderr
    r = run(BIN/'dogft-predict', '--help')
    assert 'most recently modified' in ' '.join(r.stdout.split())

def test_predict_usage_errors(exported, tmp_path):
    root, name, _ = exported
    img = _images(tmp_path/'imgs')['good'][0]
    for args, home, msg in [(['--model', tmp_path/'none.onnx'], root, 'does not exist'), ([], tmp_path, 'dogft-export'),
                            (['--top-k', '0'], root, 'top-k'), (['--model', img], root, 'cannot load')]:
        r = run(BIN/'dogft-predict', img, *args, home=home)
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith('dogft-predict: error:') and msg in r.stderr, r.stderr

def test_predict_never_imports_torch(exported, tmp_path):
    root, name, _ = exported
    img = _images(tmp_path/'imgs')['good'][0]
    code = textwrap.dedent(f"""
        import sys
        from dogft.predict import dogft_predict
        rc = dogft_predict([{str(img)!r}], json=True)
        heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'timm', 'fastai', 'pandas', 'onnx'))
        assert not heavy, heavy
        sys.exit(rc)""")
    r = run(sys.executable, '-c', code, home=root)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)['top'][0]['breed'] in ('beagle', 'boxer', 'toy_poodle')

# --- the real model on the shared photos

@pytest.mark.skipif(shared_stanford_dogs() is None, reason='no shared Stanford Dogs folder')
def test_real_lite0_export_int8_and_predict(tmp_path):
    "The ImageNet-pretrained lite0 (zero-shot head for the five breeds) through the whole export, the gate on the 121 real test images, and dogft-predict on real photos without torch."
    import torch, timm
    from dogft.models import imagenet_zero_shot
    data = prepare_data(shared_stanford_dogs(), None, tmp_path/'data'/'processed', quiet=True)
    df = read_split(data)
    names = sorted(df.breed.unique())
    net = imagenet_zero_shot('efficientnet_lite0', names)
    make_fake_run(tmp_path, data, 'efficientnet_lite0', 'zeroshot', 0, img_size=224, val_acc=0.9, net=net)
    rep = ex.export_model(out_dir=tmp_path, quantize='int8', repeats=1, calib_images=64)
    assert rep['status'] == 'passed' and rep['n_test'] == 121 == int((df.split == 'test').sum())
    assert rep['fp32']['max_abs_logit_diff'] <= 1e-4 and rep['fp32']['top1_agreement'] == 1.0
    assert rep['int8']['acc_drop_points'] <= 1.0 and rep['pytorch']['test_acc'] > 0.85
    assert rep['int8']['bytes'] < 0.3*rep['fp32']['bytes']
    # the predictor (fp32 and int8) on real photos, in a process without torch, against PyTorch + timm's eval transform
    test = df[df.split == 'test'].iloc[::6]
    files = [str(data/p) for p in test.path]
    code = textwrap.dedent("""
        import sys, json
        from dogft.predict import Classifier
        out = {m: Classifier(m).predict(sys.argv[2:], top_k=5) for m in sys.argv[1].split(',')}
        assert 'torch' not in sys.modules
        print(json.dumps(out))""")
    models = f"{rep['fp32']['file']},{rep['int8']['file']}"
    r = run(sys.executable, '-c', code, models, *files)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    tfm = timm.data.create_transform(**ex.load_run_model(rep['checkpoint'])[1]['data_config'], is_training=False)
    with torch.no_grad(): ref = net.eval()(torch.stack([tfm(Image.open(f).convert('RGB')) for f in files])).softmax(-1).numpy()
    got = np.array([[{t['breed']: t['prob'] for t in o['top']}[b] for b in names] for o in out[rep['fp32']['file']]])
    assert np.abs(got - ref).max() < 1e-4
    for m in out.values():
        acc = np.mean([o['top'][0]['breed'] == b for o,b in zip(m, test.breed)])
        assert acc >= 0.85, (m, acc)
