"Checks of the benchmark scripts' own logic (their measurements are in bench/results)."
import importlib.util, sys
from pathlib import Path

import pytest

from dogft.data import make_fake_stanford, prepare_data, read_split

ROOT = Path(__file__).resolve().parents[1]


def load_bench(name):
    "Import `bench/{name}.py` as a module."
    spec = importlib.util.spec_from_file_location(name, ROOT/'bench'/f'{name}.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_data_size_subsets_only_the_training_split(tmp_path):
    data_size = load_bench('data_size')
    names = ['beagle', 'boxer']
    make_fake_stanford(tmp_path/'src', names, n=20, layout='name')
    data = prepare_data(tmp_path/'src', names, tmp_path/'processed', quiet=True)
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
