"Checks of the bench studies' own logic and layout (their measurements are in bench/<study>/results.json)."
import importlib.util, json, math, re, sys
from pathlib import Path

import pytest
import torch

from dogft.data import prepare_data, read_split
from dogft.testing import make_fake_stanford

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT/'bench'
STUDIES = ['train_speed', 'inference', 'lr_find', 'recipe_choices', 'recipe_cv', 'data_size', 'open_set', 'reliability', 'scale', 'breeds120', 'web', 'ray']  # a script each
HOMES = ['seven_breeds', 'split_60_15_25']  # the whole pipeline in a DOGFT_HOME of its own: committed results/, no script
ABSOLUTE = re.compile(r'''(?<![\w.$~])/(?:work|tmp|home|root|Users|mnt|data|shared|scratch|private|var)(?:/|\b)''')


def load_bench(name, script=None):
    "Import `bench/{name}/{script or name}.py` as a module."
    spec = importlib.util.spec_from_file_location(f'bench_{name}', BENCH/name/f'{script or name}.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def benchlib():
    "The bench scripts' shared helper, imported by path as they do."
    if str(BENCH) not in sys.path: sys.path.insert(0, str(BENCH))
    import benchlib
    return benchlib


@pytest.fixture
def data(tmp_path):
    "A processed folder of two synthetic breeds, 20 images each."
    names = ['beagle', 'boxer']
    make_fake_stanford(tmp_path/'src', names, n=20, layout='name')
    return prepare_data(tmp_path/'src', names, tmp_path/'processed', quiet=True)


def test_layout_one_folder_per_study():
    "Every study is a folder with a README; a scripted one has its script and a results file the Studies page reads."
    folders = sorted(p.name for p in BENCH.iterdir() if p.is_dir() and not p.name.startswith(('_', '.')))
    assert set(STUDIES) <= set(folders)
    assert not (BENCH/'results').exists(), "results live in bench/<study>/, not in bench/results/"
    for f in folders:
        readme = (BENCH/f/'README.md').read_text()
        assert readme.startswith(f'# {f}:'), f"bench/{f}/README.md should open with '# {f}: <the question>'"
        assert re.search(r'^Found\b', readme, re.M), f"bench/{f}/README.md says what the study found"
    for s in STUDIES:
        assert (BENCH/s/f'{s}.py').is_file()
        reports = json.loads((BENCH/s/'results.json').read_text())
        md = (BENCH/s/'results.md').read_text()
        assert reports, f"bench/{s}/results.json has no report"
        for name,r in reports.items():
            assert f'<!-- report: {name} -->' in md, f"bench/{s}/results.md lacks report {name!r}"
            assert f'bench/{s}/{s}.py' in r['command'] and f"--name {name}" in r['command'].replace("'", ''), \
                f"{s}: report {name!r} does not record the command that reruns it"
    for h in HOMES:
        res = BENCH/h/'results'
        assert (res/'comparison.csv').is_file() and list((res/'metrics').glob('*_results.json')), f"bench/{h}/results/ lacks its runs"
        assert f'DOGFT_HOME=bench/{h} dogft-run-all' in (BENCH/h/'README.md').read_text(), f"bench/{h}/README.md lacks its commands"
    index = (BENCH/'README.md').read_text()
    for f in folders: assert f'[`{f}`]({f}/)' in index, f"bench/README.md's table lacks {f}"


def _ignored_output(p:Path)->bool:
    "Whether `p` is under a home's `data/` or `models/`: this machine's git-ignored outputs, never committed."
    return bool({'data', 'models'} & set(p.relative_to(ROOT).parts[:-1]))

def test_no_machine_paths_in_bench():
    "No absolute path of one particular machine in any committed bench or example file (scripts, READMEs, reports, the runs' metrics): data and work folders come from DOGFT_HOME, DOGFT_SOURCE or flags, and a run records its data folder relative to its home."
    assert _ignored_output(BENCH/'seven_breeds'/'data'/'processed'/'stamp.json') and not _ignored_output(BENCH/'seven_breeds'/'results'/'metrics'/'x.json')
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()[:120]}"
             for d in (BENCH, ROOT/'examples') for p in sorted(d.rglob('*'))
             if p.is_file() and p.suffix in ('.py', '.md', '.json', '.txt', '.sh', '.csv') and not _ignored_output(p)
             for i,line in enumerate(p.read_text().splitlines(), 1) if ABSOLUTE.search(line)]
    assert not found, 'absolute machine paths in bench/ or examples/:\n' + '\n'.join(found)
    assert ABSOLUTE.search("default='/tmp/data_size'") and ABSOLUTE.search('of /work/main/data/processed.')
    assert not ABSOLUTE.search('$DOGFT_HOME/data/processed') and not ABSOLUTE.search('bench/recipe_cv/results.json')


def test_benchlib_reports(tmp_path, monkeypatch):
    "`save_report` keeps one named report per entry in the JSON and in the markdown beside it; paths are shown without the machine's."
    bl = benchlib()
    f = tmp_path/'results.json'
    bl.save_report(f, 'a', dict(command='python x', rows=[1]), '# A\n\none\n')
    bl.save_report(f, 'b, seven', dict(command='python y', rows=[2]), '# B\n')
    bl.save_report(f, 'a', dict(command='python x', rows=[3]), '# A\n\nagain\n')  # replaced in place, the others kept
    assert list(json.loads(f.read_text())) == ['a', 'b, seven'] and bl.load_report(f, 'a')['rows'] == [3]
    assert bl.md_sections(f.with_suffix('.md').read_text()) == {'a': '# A\n\nagain', 'b, seven': '# B'}
    with pytest.raises(SystemExit, match='no report'): bl.load_report(f, 'c')
    monkeypatch.setenv('DOGFT_HOME', str(tmp_path/'home'))
    assert bl.show_path(tmp_path/'home'/'data'/'processed') == '$DOGFT_HOME/data/processed'
    assert bl.show_path(BENCH/'recipe_cv'/'results.json') == 'bench/recipe_cv/results.json'
    assert bl.command_line(BENCH/'data_size'/'data_size.py', ['--data-dir', str(tmp_path/'home'/'d'), '--name', 'five breeds']) \
        == "python bench/data_size/data_size.py --data-dir '$DOGFT_HOME/d' --name 'five breeds'"
    info = bl.machine_info(extra=1)
    assert info['cpu'] and info['cpu_count'] and info['extra'] == 1 and 'dogft' in info['versions']
    assert bl.machine_line(info).startswith('Machine: ')
    assert bl.work_dir('recipe_cv', 'x').parts[-3:] == ('dogft-bench', 'recipe_cv', 'x')


@pytest.mark.parametrize('study', STUDIES)
def test_scripts_import_and_parse(study, capsys):
    "Each script imports (with the shared helper) and shows its --help."
    mod = load_bench(study)
    old = sys.argv
    sys.argv = [f'bench/{study}/{study}.py', '--help']
    try:
        with pytest.raises(SystemExit) as e: mod.main()
    finally: sys.argv = old
    assert e.value.code == 0 and '--name' in capsys.readouterr().out


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


def test_train_speed_reuses_a_named_report(tmp_path):
    "`--seed-from FILE:NAME` and `--merge` read reports out of a study's results file."
    train_speed = load_bench('train_speed')
    bl = benchlib()
    run = lambda s: dict(method='seed-literal', strategy=s, epochs_planned=2, notes='n')
    bl.save_report(tmp_path/'r.json', 'one', dict(command='c1', machine={}, runs=[run('freeze')], comparisons=[]), '# one')
    bl.save_report(tmp_path/'r.json', 'two', dict(command='c2', machine={}, runs=[run('partial')], comparisons=[]), '# two')
    d = train_speed._report(f"{tmp_path/'r.json'}:two")
    assert train_speed.reused_seed_run(d, 'r.json:two', 'partial', 2)['notes'] == 'n; reused from r.json:two (not rerun)'
    with pytest.raises(SystemExit): train_speed._report(str(tmp_path/'r.json'))  # two reports: name one
