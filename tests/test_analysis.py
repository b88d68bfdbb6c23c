"`dogft.analysis` on synthetic metrics files: intervals and tests against hand-computed values, every output written, the CLI contract."
import json, math, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest

from dogft.data import DogftError
from dogft.analysis import (analyze, dogft_analyze, load_runs, make_metrics, mcnemar_exact, t_interval, wilson_interval,
                            markdown_table, format_table, comparison_table, overfitting)

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
        ('efficientnet_lite0', 'partial'), ('efficientnet_lite0', 'full'), ('resnet50', 'zero-shot'), ('resnet50', 'full')]
    r = df.set_index(['model', 'strategy'])
    three = r.loc[('efficientnet_lite0', 'partial')]
    accs = [m['test_acc'] for m in result['runs'] if m['strategy'] == 'partial']
    assert three.n_seeds == 3 and three.interval == 't 95% over 3 seeds'
    assert (three.test_acc, three.test_acc_lo) == pytest.approx(t_interval(accs)[:2])
    assert three.test_acc_hi == pytest.approx(min(1, t_interval(accs)[2]))
    one = r.loc[('efficientnet_lite0', 'freeze')]
    assert one.n_seeds == 1 and one.interval.startswith('Wilson')
    assert (one.test_acc_lo, one.test_acc_hi) == pytest.approx(wilson_interval(114, 120))
    assert result['best'] == ('efficientnet_lite0', 'partial')
    assert r.loc[('efficientnet_lite0', 'partial')].vs_best == 'best (reference)'
    assert r.loc[('efficientnet_lite0', 'full')].overfit_runs == 1
    assert r.loc[('efficientnet_lite0', 'freeze')].trainable_pct == pytest.approx(100*6405/3377413)
    # zero-shot rows: measured for lite0, stated as missing for resnet50
    assert r.loc[('efficientnet_lite0', 'zero-shot')].test_acc == pytest.approx(102/120)
    assert r.loc[('resnet50', 'zero-shot')].note == 'no zero-shot metrics file for this model'

def test_mcnemar_against_best(result):
    "The zero-shot run (seed 0) is paired with each of the best configuration's three seeds; freeze shares seed 42 only."
    t = result['tests']
    assert [(x['seed_best'], x['seed_other']) for x in t[('efficientnet_lite0', 'zero-shot')]] == [(42, 0), (43, 0), (44, 0)]
    assert [(x['seed_best'], x['seed_other']) for x in t[('efficientnet_lite0', 'freeze')]] == [(42, 42)]
    assert all(x['n'] == 120 for x in t[('efficientnet_lite0', 'freeze')])
    assert 'McNemar' in result['summary'] and ('not significant' in result['summary'] or 'Not significantly' in result['summary'])

def test_not_pretrained_flagged(result):
    md = result['files']['comparison_md'].read_text()
    row = next(l for l in md.splitlines() if l.startswith('| resnet50 | full'))
    assert 'random init' in row and 'NOT PRETRAINED' in row
    assert 'Trained from random weights' in result['summary']

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
           ['resnet50_full_confusion_matrix.png']
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
    assert res['best'] == ('efficientnet_lite0', 'partial')

def test_cli(study, tmp_path):
    ok = subprocess.run([BIN/'dogft-analyze', '--out-dir', str(study)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert 'Best configuration' in ok.stdout and 'skipped efficientnet_b0_full_s42_results.json' in ok.stderr
    bad = subprocess.run([BIN/'dogft-analyze', '--out-dir', str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.startswith('dogft-analyze: error: no usable metrics files') and bad.stderr.count('\n') == 1
    assert subprocess.run([BIN/'dogft-analyze', '--help'], capture_output=True).returncode == 0

def test_env_home(study, monkeypatch):
    "Without --out-dir, $DOGFT_HOME is the root."
    monkeypatch.setenv('DOGFT_HOME', str(study))
    assert analyze()['best'] == ('efficientnet_lite0', 'partial')

def test_zero_shot_only(tmp_path):
    "A folder with only a zero-shot file still gives a report (no curves to draw, no comparisons)."
    make_metrics(tmp_path, strategy='zero-shot', acc=0.9)
    res = analyze(tmp_path)
    assert res['best'] == ('efficientnet_lite0', 'zero-shot') and res['tests'] == {}
    assert res['files']['training_curves'].stat().st_size > 0

def test_run_all_followup(study):
    "`dogft-run-all` calls `dogft_analyze(out_dir=...)` after a matrix: it returns normally."
    from dogft.run_all import run_followups
    assert run_followups(study, [('dogft.analysis', 'dogft_analyze')]) == {'dogft.analysis': 'done'}
