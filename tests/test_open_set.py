"Issue 26, item 8: the open-set answer. Each reason fires on a model whose heads are set by hand, the command says it in words and in JSON, old model files keep working, the export's rule and the predictor's agree, and on real photos a cat is 'none of these' while the trained breeds are not."
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dogft import export as ex
from dogft.data import prepare_data, read_split, shared_stanford_dogs
from dogft.predict import Classifier, open_set_answer
from dogft.testing import make_fake_run, make_open_set_onnx, make_tiny_onnx

BIN = Path(sys.executable).parent
COLOURS = dict(red=(255, 0, 0), green=(0, 255, 0), blue=(0, 0, 255), white=(255, 255, 255))


def predict_cli(*args):
    return subprocess.run([BIN/'dogft-predict', *map(str, args)], capture_output=True, text=True, env={**os.environ, 'DOGFT_HOME': '/nonexistent'})


@pytest.fixture
def shots(tmp_path):
    for n,c in COLOURS.items(): Image.new('RGB', (48, 40), c).save(tmp_path/f'{n}.png')
    return [tmp_path/f'{n}.png' for n in COLOURS]


def test_each_reason_in_json_and_words(tmp_path, shots):
    "The hand-set model: red is not a dog, green a dog breed outside the model, blue low confidence, white a golden retriever."
    m = make_open_set_onnx(tmp_path/'two.onnx')
    r = predict_cli(*shots, '--model', m, '--json', '--top-k', '1')
    assert r.returncode == 0 and r.stderr == '', r.stderr
    got = [json.loads(l) for l in r.stdout.splitlines()]
    assert [(g['none_of_these'], g['reason']) for g in got] == [(True, 'not a dog'), (True, 'a dog breed outside this model'),
                                                                  (True, 'low confidence'), (False, None)]
    assert [g['imagenet']['top'] for g in got] == ['tabby', 'miniature poodle', 'beagle', 'golden retriever']
    r = predict_cli(*shots, '--model', m, '--top-k', '1')
    lines = r.stdout.splitlines()[1:]
    assert lines[0] == f"{shots[0]}: none of these (not a dog; ImageNet sees: tabby 100%); closest: beagle 98.2%"
    assert lines[3] == f"{shots[3]}: golden_retriever 100.0%"


def test_thresholds_in_the_file_decide(tmp_path, shots):
    "The same graph with other thresholds answers otherwise: the rule is read from the metadata, not built in."
    lenient = Classifier(make_open_set_onnx(tmp_path/'lenient.onnx', dict(dog=0., own=0., conf=0.))).predict(shots)
    assert not any(r['none_of_these'] for r in lenient)
    strict = Classifier(make_open_set_onnx(tmp_path/'strict.onnx', dict(dog=0.5, own=0.5, conf=0.9999))).predict(shots)
    assert [r['reason'] for r in strict][2:] == ['low confidence', 'low confidence']  # white is 99.97% sure


def test_confidence_only_and_old_models(tmp_path, shots):
    "Without an ImageNet head only the confidence rule answers; a model exported before the rule answers as before, with one note."
    res = Classifier(make_open_set_onnx(tmp_path/'conf.onnx', imagenet=False)).predict(shots)
    assert [r['none_of_these'] for r in res] == [False, False, True, False] and not any('imagenet' in r for r in res)
    old = make_tiny_onnx(tmp_path/'old.onnx')
    r = predict_cli(*shots, '--model', old, '--json')
    assert r.returncode == 0 and r.stderr.count('has no open-set rule') == 1, r.stderr
    assert all('none_of_these' not in json.loads(l) for l in r.stdout.splitlines())


def test_export_rule_and_predictor_agree():
    "The export's signals and thresholds, applied by the predictor's `open_set_answer`, flag the same images."
    rng = np.random.default_rng(0)
    z,g = rng.normal(0, 3, (400, 5)),rng.normal(0, 3, (400, 1000))
    g[:200, 151:269] += 4  # half of them look like dogs
    tidx = [162, 207, 235, 242, 265]
    s = ex.open_set_signals(z, g, tidx)
    rule = ex.open_set_rule(ex.open_set_signals(z[:100], g[:100], tidx), 100, dict(source='file'), tidx, alpha=0.05)
    ans = open_set_answer(z, g, rule)
    want = np.any([s[k] < t for k,t in rule['thresholds'].items()], axis=0)
    assert [a['none_of_these'] for a in ans] == want.tolist() and 0 < want.sum() < len(want)
    assert sum(a['none_of_these'] for a in ans[:100]) <= 3*5  # each rule flags at most 5 of its 100 validation images
    np.testing.assert_allclose([a['imagenet']['dog'] for a in ans], s['dog'], atol=1e-6)


@pytest.mark.skipif(shared_stanford_dogs() is None, reason='no shared Stanford Dogs folder')
def test_real_photos_cat_is_none_of_these(tmp_path):
    "The bundled ImageNet lite0 with a zero-shot five-breed head, exported: thresholds from the 121 validation images, a cat and a coffee cup are 'not a dog', the trained breeds' test photos mostly answer as before."
    sd = pytest.importorskip('skimage.data')
    from dogft.models import imagenet_zero_shot, weights_info
    data = prepare_data(shared_stanford_dogs(), None, tmp_path/'data'/'processed', quiet=True)
    df = read_split(data)
    net = imagenet_zero_shot('efficientnet_lite0', sorted(df.breed.unique()))
    run = make_fake_run(tmp_path, data, 'efficientnet_lite0', 'zeroshot', 0, img_size=224, val_acc=0.9, net=net)
    mf = tmp_path/'results'/'metrics'/f'{run}_results.json'
    mf.write_text(json.dumps(dict(json.loads(mf.read_text()), weights=weights_info(net))))  # what train_run records
    rep = ex.export_model(out_dir=tmp_path, repeats=1, quiet=True)
    assert rep['status'] == 'passed' and rep['open_set']['outputs'] == ['logits', 'imagenet_logits'], rep
    assert rep['fp32']['imagenet']['max_abs_logit_diff'] <= 1e-4
    clf = Classifier(rep['fp32']['file'])
    rule = clf.meta['open_set']
    n_val = int((df.split == 'val').sum())
    assert rule['chosen_on'] == dict(split='val', images=n_val, alpha=ex.OPEN_SET_ALPHA) and rule['imagenet_head']['source'] == 'package'
    xv,_ = ex.eval_images(data, clf.meta, clf.class_names, 'val')
    out = ex.outputs_of(lambda xb: tuple(clf.session.run(None, {'input': xb})), xv, clf.meta)
    sv = ex.open_set_signals(*out, rule['trained_imagenet'])
    np.testing.assert_allclose([rule['thresholds'][k] for k in ('dog', 'own', 'conf')], [sv[k].min() for k in ('dog', 'own', 'conf')], atol=1e-5)
    Image.fromarray(sd.chelsea()).save(tmp_path/'cat.png')
    Image.fromarray(sd.coffee()).save(tmp_path/'coffee.png')
    test = [data/p for p in df[df.split == 'test'].path]
    res = clf.predict([tmp_path/'cat.png', tmp_path/'coffee.png', *test])
    assert [(r['none_of_these'], r['reason']) for r in res[:2]] == [(True, 'not a dog')]*2, res[:2]
    assert res[0]['imagenet']['top'] in ('tabby', 'tiger cat', 'Egyptian cat')
    assert np.mean([r['none_of_these'] for r in res[2:]]) <= 0.05  # at most 6 of the 121 test photos
