"`dogft.analysis` on synthetic metrics files: intervals and tests against hand-computed values, every output written, the CLI contract."
import json, math, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest

from dogft.core import DogftError
from dogft.testing import make_metrics
from dogft.analysis import (analyze, dogft_analyze, load_runs, mcnemar_exact, t_interval, wilson_interval, markdown_table, format_table, comparison_table, overfitting,
                            model_to_ship)

BIN = Path(sys.executable).parent
PNG = b'\x89PNG\r\n\x1a\n'

@pytest.fixture(scope='module')
def study(tmp_path_factory):
    "A results folder: zero-shot + freeze (1 seed) + partial (3 seeds) + full (overfits) for lite0; resnet50 unpretrained, no zero-shot; a cut-off file and a schema-broken one."
    root = tmp_path_factory.mktemp('study')
    make_metrics(root, strategy='zero-shot', acc=0.85)
    make_metrics(root, strategy='freeze', seed=42, acc=0.95, images=True)
    for s,a in [(42, 0.975), (43, 0.967), (44, 0.983)]: make_metrics(root, strategy='partial', seed=s, acc=a, images=True)
    make_metrics(root, strategy='full', seed=42, acc=0.93, overfit=True, epochs=12)
    make_metrics(root, model='resnet50', strategy='full', seed=42, acc=0.6, pretrained=False)
    mdir = root/'results'/'metrics'
    (mdir/'efficientnet_b0_full_s42_results.json').write_text('{"model": "efficientnet_b0", "strategy": "fu')  # cut short
    bad = json.loads((mdir/'efficientnet_lite0_freeze_s42_results.json').read_text())
    del bad['test_predictions']; bad['model'] = 'broken'
    (mdir/'broken_freeze_s42_results.json').write_text(json.dumps(bad))
    # the first mistake of each partial run has no image on disk: the gallery must cope
    for s in (42, 43, 44):
        m = json.loads((mdir/f'efficientnet_lite0_partial_s{s}_results.json').read_text())
        p = next(p['path'] for p in m['test_predictions'] if p['true'] != p['predicted'])
        (root/'data'/'processed'/p).unlink(missing_ok=True)
    return root

@pytest.fixture(scope='module')
def result(study): return analyze(study)

def test_wilson_known_values():
    "Wilson 95% for 118/121 equals the textbook formula and the published value."
    lo,hi = wilson_interval(118, 121)
    z,p,n = 1.959963984540054,118/121,121
    c,h = (p + z*z/(2*n))/(1 + z*z/n),z/(1 + z*z/n)*math.sqrt(p*(1 - p)/n + z*z/(4*n*n))
    assert lo == pytest.approx(c - h, abs=1e-9) and hi == pytest.approx(c + h, abs=1e-9)
    assert (round(lo, 4), round(hi, 4)) == (0.9296, 0.9915)
    assert wilson_interval(121, 121)[1] == pytest.approx(1.0) and wilson_interval(121, 121)[0] < 1

def test_t_interval_known_values():
    "Three seeds 0.90, 0.95, 1.00: mean 0.95, sd 0.05, t(0.975, 2) = 4.302653."
    mean,lo,hi = t_interval([0.90, 0.95, 1.00])
    half = 4.302652729749464*0.05/math.sqrt(3)
    assert (mean, lo, hi) == pytest.approx((0.95, 0.95 - half, 0.95 + half), abs=1e-9)
    assert math.isnan(t_interval([0.9])[1])

def test_mcnemar_hand_computed():
    "1 image only A gets right, 6 only B: p = 2·(C(7,0) + C(7,1))/2⁷ = 0.125."
    a = [True]*50 + [True] + [False]*6
    b = [True]*50 + [False] + [True]*6
    r = mcnemar_exact(a, b)
    assert (r['a_only'], r['b_only']) == (1, 6)
    assert r['p'] == pytest.approx(2*(math.comb(7, 0) + math.comb(7, 1))/2**7) == pytest.approx(0.125)
    assert mcnemar_exact([True]*5, [True]*5)['p'] == 1.0

def test_overfitting_flag():
    h = [dict(epoch=i + 1, train_loss=1/(i + 1), val_loss=v) for i,v in enumerate([0.5, 0.3, 0.28, 0.35, 0.4])]
    assert overfitting(h)['flag'] and overfitting(h)['min_epoch'] == 3
    assert not overfitting(h[:3])['flag']

def test_broken_files_reported_not_fatal(study, result):
    runs,skipped = load_runs(study)
    assert {f for f,_ in skipped} == {'efficientnet_b0_full_s42_results.json', 'broken_freeze_s42_results.json'}
    assert 'missing test_predictions' in dict(skipped)['broken_freeze_s42_results.json']
    assert len(runs) == 7
    md = result['files']['comparison_md'].read_text()
    assert 'efficientnet_b0_full_s42_results.json' in md and 'Skipped 2' in md

def test_table_rows_and_intervals(result):
    df = pd.read_csv(result['files']['comparison_csv'])
    assert list(zip(df.model, df.strategy)) == [('efficientnet_lite0', 'zero-shot'), ('efficientnet_lite0', 'freeze'),
        ('efficientnet_lite0', 'partial'), ('efficientnet_lite0', 'full'), ('resnet50', 'zero-shot'), ('resnet50', 'full (random init)')]
    r = df.set_index(['model', 'strategy'])
    three = r.loc[('efficientnet_lite0', 'partial')]
    accs = [m['test_acc'] for m in result['runs'] if m['strategy'] == 'partial']
    assert three.n_seeds == 3 and three.interval == 't 95% over 3 seeds'
    assert (three.test_acc, three.test_acc_lo) == pytest.approx(t_interval(accs)[:2])
    assert three.test_acc_hi == pytest.approx(min(1, t_interval(accs)[2]))
    one = r.loc[('efficientnet_lite0', 'freeze')]
    assert one.n_seeds == 1 and one.interval.startswith('Wilson')
    assert (one.test_acc_lo, one.test_acc_hi) == pytest.approx(wilson_interval(114, 120))
    assert result['ship']['config'] == ('efficientnet_lite0', 'partial') and df.reference.sum() == 1 and r.loc[('efficientnet_lite0', 'partial')].reference
    assert r.loc[('efficientnet_lite0', 'partial')].vs_reference == 'reference: the model to ship'
    assert r.loc[('efficientnet_lite0', 'full')].overfit_runs == 1
    assert r.loc[('efficientnet_lite0', 'freeze')].trainable_pct == pytest.approx(100*6405/3377413)
    # zero-shot rows: measured for lite0, stated as missing for resnet50
    assert r.loc[('efficientnet_lite0', 'zero-shot')].test_acc == pytest.approx(102/120)
    assert r.loc[('resnet50', 'zero-shot')].note == 'no zero-shot metrics file for this model'

def test_mcnemar_against_the_model_to_ship(result):
    "The zero-shot run (seed 0) is paired with each of the shipped configuration's three seeds; freeze shares seed 42 only."
    t = result['tests']
    assert [(x['seed_ref'], x['seed_other']) for x in t[('efficientnet_lite0', 'zero-shot')]] == [(42, 0), (43, 0), (44, 0)]
    assert [(x['seed_ref'], x['seed_other']) for x in t[('efficientnet_lite0', 'freeze')]] == [(42, 42)]
    assert all(x['n'] == 120 for x in t[('efficientnet_lite0', 'freeze')])
    assert 'McNemar' in result['summary'] and ('not significant' in result['summary'] or 'Not significantly' in result['summary'])

def test_not_pretrained_flagged(result):
    md = result['files']['comparison_md'].read_text()
    row = next(l for l in md.splitlines() if l.startswith('| resnet50 | full (random init) |'))
    assert 'NOT PRETRAINED' in row
    assert 'Trained from random weights' in result['summary'] and 'resnet50 / full (random init)' in result['summary']
    assert 'cannot learn' not in result['summary']  # said only for a frozen random backbone

def test_markdown_table_parses(result):
    md = result['files']['comparison_md'].read_text()
    rows = [l for l in md.splitlines() if l.startswith('|')]
    assert len(rows) == 2 + 6
    cells = [len(l.strip().strip('|').split(' | ')) for l in rows if not l.startswith('|---')]
    assert len(set(cells)) == 1 and cells[0] == len(result['formatted'].columns)
    assert rows[1].count('|') == rows[0].count('|')
    tricky = markdown_table(pd.DataFrame({'a': ['x | y'], 'b': ['z']}))  # a pipe in a cell is escaped
    assert [len(l.replace('\\|', '').strip('|').split('|')) for l in tricky.splitlines()] == [2, 2, 2]

def test_every_file_written(study, result):
    res = study/'results'
    pngs = ['training_curves.png', 'comparison_table.png', 'misclassified_gallery.png'] + \
           [f'efficientnet_lite0_{s}_confusion_matrix.png' for s in ('zero-shot', 'freeze', 'partial', 'full')] + \
           ['resnet50_full_random-init_confusion_matrix.png']
    for n in pngs:
        f = res/'plots'/n
        assert f.read_bytes()[:8] == PNG and f.stat().st_size > 5_000, n
    for m in result['runs']:
        stem = res/'reports'/f"{m['model']}_{m['strategy']}_s{m['seed']}_classification_report"
        assert 'precision' in stem.with_suffix('.txt').read_text()
        assert json.loads(stem.with_suffix('.json').read_text())['accuracy'] == pytest.approx(m['test_acc'])
    assert (res/'comparison.csv').stat().st_size > 0 and (res/'comparison.md').stat().st_size > 0
    assert not list(res.rglob('*.tmp')), 'temporary files left behind'
    assert all(Path(f).exists() for f in result['files'].values())

def test_rerun_is_stable(study, result):
    "A second analysis of the same folder writes the same table."
    again = analyze(study)
    assert again['files']['comparison_md'].read_text() == result['files']['comparison_md'].read_text()

def test_python_call_raises(tmp_path):
    with pytest.raises(DogftError, match='no usable metrics files'): dogft_analyze(out_dir=str(tmp_path))
    (tmp_path/'results'/'metrics').mkdir(parents=True)
    (tmp_path/'results'/'metrics'/'x_s1_results.json').write_text('{')
    with pytest.raises(DogftError, match='1 skipped'): analyze(tmp_path)

def test_python_call_returns(study):
    res = dogft_analyze(out_dir=str(study))
    assert res['ship']['config'] == ('efficientnet_lite0', 'partial')

def test_cli(study, tmp_path):
    ok = subprocess.run([BIN/'dogft-analyze', '--out-dir', str(study)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"- Model to ship: {analyze(study)['ship']['run']} (efficientnet_lite0 / partial: ")
    assert 'skipped efficientnet_b0_full_s42_results.json' in ok.stderr
    for word in ('Best', 'Pick', '<NA>', '**', 'Intervals:'): assert word not in ok.stdout, word  # for people: no markdown, no pandas frame
    assert ok.stdout.rstrip().splitlines()[-1].startswith(f"dogft-analyze: 7 runs in 5 configurations (★ the model to ship's); wrote ")
    bad = subprocess.run([BIN/'dogft-analyze', '--out-dir', str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.startswith('dogft-analyze: error: no usable metrics files') and bad.stderr.count('\n') == 1
    assert subprocess.run([BIN/'dogft-analyze', '--help'], capture_output=True).returncode == 0

def test_env_home(study, monkeypatch):
    "Without --out-dir, $DOGFT_HOME is the root."
    monkeypatch.setenv('DOGFT_HOME', str(study))
    assert analyze()['ship']['config'] == ('efficientnet_lite0', 'partial')

def test_zero_shot_only(tmp_path):
    "A folder with only a zero-shot file still gives a report (no curves to draw, no comparisons)."
    make_metrics(tmp_path, strategy='zero-shot', acc=0.9)
    res = analyze(tmp_path)
    assert res['ship'] is None and res['tests'] == {} and 'No trained run yet' in res['summary']
    assert res['files']['training_curves'].stat().st_size > 0

def test_run_all_followup(study):
    "`dogft-run-all` calls `dogft_analyze(out_dir=...)` after a matrix: it returns normally."
    from dogft.run_all import run_followups
    assert run_followups(study, [('dogft.analysis', 'dogft_analyze')]) == {'dogft.analysis': 'done'}

def test_model_to_ship_rule():
    "Validation decides, never the test split: mean over seeds, then validation loss, then fewer trainable parameters; then the best seed."
    fk = lambda st, va, vl, seed=42, pt=100, test_acc=0.5, **kw: dict(model='m', strategy=st, seed=seed, best_val_acc=va, best_val_loss=vl,
                                                                      params_trainable=pt, test_acc=test_acc, **kw)
    assert model_to_ship([fk('freeze', 0.9, 0.3, test_acc=1.0), fk('full', 0.95, 0.3, test_acc=0.1)])['run'] == 'm_full_s42'
    assert model_to_ship([fk('zero-shot', 0.99, 0.1, seed=0), fk('freeze', 0.9, 0.3)])['run'] == 'm_freeze_s42'
    assert model_to_ship([fk('full', 0.95, 0.2), fk('partial', 0.95, 0.3)])['config'] == ('m', 'full')
    tie = model_to_ship([fk('full', 0.95, 0.3, pt=3_000_000), fk('freeze', 0.95, 0.3, pt=6_000)])
    assert tie['run'] == 'm_freeze_s42' and 'fewer trainable parameters' in tie['reason']
    seeds = [fk('partial', a, l, seed=s) for s,a,l in [(42, 0.95, 0.3), (43, 0.975, 0.25), (44, 0.975, 0.2)]]
    assert model_to_ship(seeds + [fk('full', 0.96, 0.1)])['run'] == 'm_partial_s44'
    rnd = fk('full', 0.99, 0.1, seed=7, weights=dict(pretrained=False))  # its own configuration, not averaged with the pretrained seeds
    assert model_to_ship(seeds + [rnd])['config'] == ('m', 'full (random init)')
    assert model_to_ship([fk('zero-shot', 0.9, 0.3)]) is None and model_to_ship([]) is None

def test_random_init_freeze_is_explained(tmp_path):
    "A frozen random backbone: every title and the text say random init, and the text says why it cannot learn."
    from PIL import Image
    make_metrics(tmp_path, strategy='zero-shot', acc=0.85)
    make_metrics(tmp_path, strategy='freeze', seed=42, acc=0.95)
    make_metrics(tmp_path, model='resnet50', strategy='freeze', seed=42, acc=0.3, pretrained=False)
    res = analyze(tmp_path)
    assert 'Freeze on a random backbone cannot learn' in res['summary']
    assert 'resnet50 / freeze (random init)' in res['files']['comparison_md'].read_text()
    assert res['files']['resnet50_freeze_random-init_confusion_matrix'].exists()
    from dogft.analysis import plot_confusion, plot_curves, plot_gallery, group_runs
    rnd = [m for m in res['runs'] if m['model'] == 'resnet50']
    assert 'resnet50 / freeze (random init)' in plot_confusion(rnd).axes[0].get_title()
    assert any('resnet50 / freeze (random init)' in ax.get_title() for ax in plot_curves(group_runs(res['runs'])).axes)
    assert plot_gallery(rnd[0], tmp_path)._suptitle.get_text().startswith('resnet50_freeze_s42 (random init): ')

def test_studies_only_when_asked(tmp_path):
    "A study nested under results/NAME/ is analyzed with --studies only; the gallery note comes at most once."
    import shutil
    home = tmp_path/'home'
    for s in (42, 43): make_metrics(home, strategy='partial', seed=s, acc=0.9, images=True)
    nested = home/'results'/'poodles'
    make_metrics(nested, strategy='freeze', seed=42, acc=0.8)
    r = subprocess.run([BIN/'dogft-analyze', '--out-dir', str(home)], capture_output=True, text=True)
    assert r.returncode == 0 and 'poodles' not in r.stdout and not (nested/'results'/'comparison.md').exists(), r.stderr
    r = subprocess.run([BIN/'dogft-analyze', '--out-dir', str(home), '--studies'], capture_output=True, text=True)
    assert r.returncode == 0 and '## The study in' in r.stdout and (nested/'results'/'comparison.md').exists(), r.stderr
    assert 'dogft-data' not in r.stdout + r.stderr  # the home's photos are there (the study's gallery is drawn, grey)
    shutil.rmtree(home/'data')  # now no photos at all, and both galleries on disk show their runs: both kept, said once
    r = subprocess.run([BIN/'dogft-analyze', '--out-dir', str(home), '--studies'], capture_output=True, text=True)
    assert r.returncode == 0 and (r.stdout + r.stderr).count('prepare the data with dogft-data') == 1, r.stderr
    assert r.stderr.count('misclassified_gallery.png') == 2
