"Checks of the benchmark scripts' own logic (their measurements are in bench/results)."
import importlib.util, math, sys
from pathlib import Path

import pytest
import torch

from dogft.data import make_fake_stanford, prepare_data, read_split

ROOT = Path(__file__).resolve().parents[1]


def load_bench(name):
    "Import `bench/{name}.py` as a module."
    spec = importlib.util.spec_from_file_location(name, ROOT/'bench'/f'{name}.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def data(tmp_path):
    "A processed folder of two synthetic breeds, 20 images each."
    names = ['beagle', 'boxer']
    make_fake_stanford(tmp_path/'src', names, n=20, layout='name')
    return prepare_data(tmp_path/'src', names, tmp_path/'processed', quiet=True)


def test_data_size_subsets_only_the_training_split(data, tmp_path):
    data_size = load_bench('data_size')
    full = read_split(data)
    d = data_size.subset_dir(data, tmp_path/'work', 3, seed=42)
    sub = read_split(d)
    assert sub[sub.split == 'train'].breed.value_counts().to_dict() == {'beagle': 3, 'boxer': 3}
    for s in ('val', 'test'):  # whole
        assert sorted(sub.path[sub.split == s]) == sorted(full.path[full.split == s])
    assert set(sub.path[sub.split == 'train']) <= set(full.path[full.split == 'train'])
    assert all((d/p).is_file() for p in sub.path)  # the folder reads like a processed one
    other = read_split(data_size.subset_dir(data, tmp_path/'work', 3, seed=43))
    assert set(other.path[other.split == 'train']) != set(sub.path[sub.split == 'train'])  # each seed draws its own subset
    assert len(read_split(data_size.subset_dir(data, tmp_path/'work', None, seed=42))) == len(full)
    with pytest.raises(SystemExit, match='more than the'):
        data_size.subset_dir(data, tmp_path/'work', 1000, seed=42)


def test_recipe_cv_nested_folds_and_picked_alpha(data, tmp_path):
    recipe_cv = load_bench('recipe_cv')
    full = read_split(data)
    pool = set(full.path[full.split.isin(['train', 'val'])])
    dirs = recipe_cv.fold_dirs(data, tmp_path/'work', 4, nested=True)
    held = [set(read_split(d).query("split == 'test'").path) for d in dirs]
    assert set().union(*held) == pool and sum(map(len, held)) == len(pool)  # every pooled image held out exactly once
    for k,d in enumerate(dirs):
        s = read_split(d)
        assert set(s.path[s.split == 'val']) == held[(k + 1) % 4]  # the next fold picks the epoch
        assert not set(s.path[s.split == 'train']) & (held[k] | held[(k + 1) % 4])
        assert not set(s.path) - pool  # the test split is never read
    assert recipe_cv.pick_alpha({0.5: 0.30, 0.9: 0.20, 1.0: 0.25}) == 0.9
    assert recipe_cv.pick_alpha({0.5: 0.20, 1.0: 0.20}) == 1.0  # a tie goes to the fine-tuned end
    rows = [dict(weights='alpha 0.9', path='a'), dict(weights='alpha 1', path='a'), dict(weights='zero-shot', path='a')]
    assert recipe_cv.picked_rows(rows, 0.9) == [dict(weights='alpha picked on val', path='a', picked_alpha=0.9)]
    nll = recipe_cv.image_nll(torch.tensor([[0.5, 0.5], [0.9, 0.1], [1.0, 0.0]]), torch.tensor([0, 1, 1]))
    assert torch.allclose(nll, torch.tensor([math.log(2), -math.log(0.1), -math.log(1e-12)]))  # a zero probability is clamped, not infinite
