#!/usr/bin/env python
"""Cross-validated recipe choices: k folds over train+val, the test split never read.

The validation split of the five default breeds has 121 images, and every trained configuration gets 120 of
them right: it cannot rank recipes. This script pools the train and validation images (678 on the default five
breeds), splits them into `--folds` stratified folds, and for each fold trains the dogft recipe on the other
folds with the held-out fold as its validation split (`dogft.train.train_run`, one folder per fold). Every
pooled image then has an out-of-fold prediction, five times more images than the validation split to choose on.

What it compares, per strategy, on the out-of-fold predictions:
- `zero-shot`: the ImageNet head restricted to the breeds, untrained;
- WiSE-FT (Wortsman et al., 2022, "Robust fine-tuning of zero-shot models"): the weights
  `(1 - alpha) * start + alpha * fine-tuned`, where `start` is what the run started from (the zero-shot head for
  freeze, the freeze run's best weights for partial and full with the warm start) and `alpha = 1` is the
  fine-tuned run itself. Floating-point tensors are interpolated; integer buffers are the fine-tuned run's.

Variants (`--variants`): `dogft`, the recipe as it is; `no warm start`; `label smoothing 0.1`; `ema 0.9` and
`ema 0.97` (validate and keep a moving average of the weights, `TrainConfig.ema`); `lr x1/3` and `lr x3` (the
strategy's default learning rate scaled; a partial or full run's freeze run keeps its own); `views 16`; `fp32`;
`drop path 0.2` (stochastic depth in the blocks that train, `TrainConfig.drop_path`); `no feature cache` (train on
images, a fresh augmented draw every epoch, instead of on the frozen prefix's output cached for a few views; the freeze
run it starts from is the recipe's own). Label smoothing lowers every prediction's confidence by design, so compare it
on errors, not on log loss.

`--seeds 42,43,44` trains every fold once per seed and pools the out-of-fold predictions (one seed's error count
moves by a few images from seed to seed). A variant whose freeze run is the recipe's own (it changes only partial or
full) copies the finished freeze run from the fold's `dogft` folder instead of training it again.

The held-out fold is also the fold the best epoch is chosen on, which favours `alpha = 1` a little (the
fine-tuned end is selected on those images, the interpolations are not) and the trained runs over the zero-shot
head. `--nested` removes that: each run trains on the other folds but one, picks its best epoch on that one (the next
fold), and only predicts the held-out fold. `--tta` adds rows (`... + flip`) where each held-out image is predicted
with horizontal-flip test-time augmentation (`predict_probs(flip=True)`: the mean of its and its mirror image's
probabilities). `--pick-alpha` (with `--nested`) adds rows `alpha picked on val`: per run, the alpha whose interpolation
has the lowest log loss on the run's validation fold (the one that picked its best epoch), scored on the held-out
fold. Test-split numbers are not read:
`dogft-analyze` reports the test split, this script only chooses.

Usage (see README.md beside this script for the commands of the committed reports):
    DOGFT_HOME=... python bench/recipe_cv/recipe_cv.py --strategies freeze,partial --folds 5 --name 'my check'
"""
from __future__ import annotations
import argparse, dataclasses, hashlib, json, os, shutil, sys, time
from pathlib import Path

import pandas as pd
import torch
from sklearn.model_selection import StratifiedKFold

from dogft.analysis import mcnemar_exact
from dogft.core import atomic_write
from dogft.data import ensure_data, read_split
from dogft.loaders import get_test_dl
from dogft.strategies import strategy_defaults
from dogft.models import imagenet_zero_shot, model_data_config
from dogft.train import TrainConfig, finished_metrics, predict_probs, run_paths, train_run, warm_start_config, resolve_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib

MODEL = 'efficientnet_lite0'
ALPHAS = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
VARIANTS = {'dogft': {}, 'no warm start': dict(warm_start=False), 'label smoothing 0.1': dict(label_smoothing=0.1),
            'ema 0.9': dict(ema=0.9), 'ema 0.97': dict(ema=0.97), 'lr x1/3': dict(lr_times=1/3), 'lr x3': dict(lr_times=3),
            'views 16': dict(views=16), 'fp32': dict(precision='fp32'), 'drop path 0.2': dict(drop_path=0.2),
            'no feature cache': dict(cache_features=False)}


def variant_settings(variant:str, strategy:str)->dict:
    "The `TrainConfig` settings of `variant` for `strategy` (`lr_times` scales the dogft recipe's learning rate for it)."
    kw = dict(VARIANTS[variant])
    if 'lr_times' in kw: kw['lr'] = float(f"{resolve_config(TrainConfig(model=MODEL, strategy=strategy)).lr * kw.pop('lr_times'):.6g}")  # 3e-05, not 3.0000000000000004e-05
    return kw


def fold_dirs(data_dir:Path, work_dir:Path, folds:int, seed:int=0, nested:bool=False)->list[Path]:
    "One processed folder per fold: the pooled train+val images, the fold held out as `val` and `test` (nested: as `test`, the next fold as `val`)."
    df = read_split(data_dir)
    pool = df[df.split.isin(['train', 'val'])].reset_index(drop=True)
    out = []
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(pool, pool.breed))
    for k,(_, held) in enumerate(splits):
        d = work_dir/f'fold{k}'
        d.mkdir(parents=True, exist_ok=True)
        for sub in ('train', 'val'):
            if not (d/sub).exists(): (d/sub).symlink_to((data_dir/sub).resolve())
        f = pool.copy()
        f['split'] = 'train'
        if nested:  # the next fold picks the best epoch, the held-out fold only scores
            f.loc[splits[(k + 1) % folds][1], 'split'] = 'val'
            f.loc[held, 'split'] = 'test'
            new = f.to_csv(index=False)
        else:
            f.loc[held, 'split'] = 'val'
            t = f[f.split == 'val'].assign(split='test')  # train_run evaluates a test split; here it is the fold again
            new = pd.concat([f, t]).to_csv(index=False)
        if not (d/'split.csv').exists() or (d/'split.csv').read_text() != new: atomic_write(d/'split.csv', lambda p: Path(p).write_text(new))
        out.append(d)
    return out


def interpolate(start:dict, tuned:dict, alpha:float)->dict:
    "WiSE-FT weights `(1-alpha)*start + alpha*tuned` (floating tensors; the rest taken from `tuned`)."
    return {k: (1 - alpha)*start[k] + alpha*v if v.is_floating_point() else v for k,v in tuned.items()}


def share_freeze_run(w:TrainConfig, base_dir:Path):
    "Copy the `dogft` folder's finished freeze run into `w`'s folder when `w` is the same run (a variant that leaves freeze alone need not retrain it)."
    base = dataclasses.replace(w, out_dir=str(base_dir))
    src,dst = run_paths(base),run_paths(w)
    if dst['metrics'].exists() or not src['best'].exists() or finished_metrics(base) is None: return
    for k in ('best', 'history', 'metrics'):  # the metrics file last: it marks the run finished
        if src[k].exists():
            dst[k].parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src[k], dst[k])


def pick_alpha(val_nll:dict)->float:
    "The alpha with the lowest validation log loss; a tie goes to the larger alpha (the fine-tuned end)."
    return min(val_nll, key=lambda a: (val_nll[a], -a))


def picked_rows(rows:list[dict], alpha:float)->list[dict]:
    "The held-out rows of `alpha`, renamed `alpha picked on val` and carrying the alpha."
    return [r | dict(weights='alpha picked on val', picked_alpha=alpha) for r in rows if r['weights'] == f'alpha {alpha:g}']


def image_nll(probs:torch.Tensor, targs:torch.Tensor)->torch.Tensor:
    "Each row's negative log probability of its target."
    return -probs[torch.arange(len(targs)), targs].clamp_min(1e-12).log()


def val_log_loss(d:Path, net, weights:dict)->dict:
    "Log loss on the fold's validation split (nested: the fold that picked the best epoch) of each state dict in `weights` (alpha → weights)."
    dl = get_test_dl(d, model_data_config(net), split='val', verbose=False)
    out = {}
    for a,sd in weights.items():
        net.load_state_dict(sd)
        out[a] = float(image_nll(*predict_probs(net, dl)).mean())
    return out


def heldout_rows(d:Path, net, weights:dict, tta:bool, **cols)->list[dict]:
    "Per image of the fold's held-out split, the prediction of each state dict in `weights` (name → weights; `tta`: also with flip TTA), with `cols` added."
    dl = get_test_dl(d, model_data_config(net), split='test', verbose=False)
    paths = read_split(d).query("split == 'test'").path.tolist()
    rows = []
    for name,sd in weights.items():
        net.load_state_dict(sd)
        for flip in (False, True) if tta else (False,):
            probs,targs = predict_probs(net, dl, flip=flip)
            rows += [cols | dict(weights=name + (' + flip' if flip else ''), path=p, target=int(t), pred=int(pr.argmax()), nll=float(n))
                     for p,t,pr,n in zip(paths, targs, probs, image_nll(probs, targs))]
    return rows


def fold_predictions(d:Path, strategy:str, variant:str, seed:int, alphas, tta:bool=False, pick:bool=False)->list[dict]:
    "Train (or reuse) the fold's run of `variant`, then out-of-fold probabilities for zero-shot and each alpha (`tta`: also with flip TTA; `pick`: also the alpha picked on the validation split)."
    out = d/'runs'/variant.replace(' ', '-').replace('/', '-')
    c = resolve_config(TrainConfig(model=MODEL, strategy=strategy, seed=seed, data_dir=str(d), out_dir=str(out), **variant_settings(variant, strategy)))
    if c.warm_start and strategy != 'freeze': share_freeze_run(warm_start_config(c), d/'runs'/'dogft')
    m = train_run(c, quiet=True)
    tag = hashlib.sha256(run_paths(c)['metrics'].read_bytes() + repr(list(alphas)).encode() + (b' flip' if tta else b'')).hexdigest()[:12]
    cache = out/'oof'/f"{run_paths(c)['metrics'].stem}_{tag}.csv"  # this run's predictions, for these alphas
    val_cache = cache.with_name(cache.stem + '_val.csv')  # its validation log loss per alpha
    rows = pd.read_csv(cache).assign(train_seconds=m['train_seconds']).to_dict('records') if cache.exists() else None
    val = {float(r.alpha): r.val_nll for r in pd.read_csv(val_cache).itertuples()} if pick and val_cache.exists() else None
    if rows is None or (pick and val is None):  # something to predict: build the weights
        net = imagenet_zero_shot(MODEL, m['class_names'], 'auto')
        zs = {k: v.clone() for k,v in net.state_dict().items()}
        start = (torch.load(run_paths(warm_start_config(c))['best'], map_location='cpu', weights_only=False)['state_dict']
                 if c.warm_start and strategy != 'freeze' else zs)
        tuned = torch.load(run_paths(c)['best'], map_location='cpu', weights_only=False)['state_dict']
        mixes = {a: interpolate(start, tuned, a) for a in alphas}
        cache.parent.mkdir(exist_ok=True)
        if rows is None:
            rows = heldout_rows(d, net, {'zero-shot': zs} | {f'alpha {a:g}': sd for a,sd in mixes.items()}, tta,
                                fold=d.name, strategy=strategy, recipe=variant, seed=seed, train_seconds=m['train_seconds'])
            atomic_write(cache, lambda f: pd.DataFrame(rows).to_csv(f, index=False))
        if pick and val is None:
            val = val_log_loss(d, net, mixes)
            atomic_write(val_cache, lambda f: pd.DataFrame(dict(alpha=list(val), val_nll=list(val.values()))).to_csv(f, index=False))
    return rows + (picked_rows(rows, pick_alpha(val)) if pick else [])


def summary(df:pd.DataFrame)->pd.DataFrame:
    "Per strategy, recipe and weights: out-of-fold log loss, accuracy, errors, the paired test against zero-shot, training seconds."
    right = lambda g: (g.pred == g.target).set_axis(g.path)
    zs = right(df[df.weights == 'zero-shot'].drop_duplicates('path'))  # the plain zero-shot head: what every row is tested against
    first = tuple(df[['strategy', 'recipe']].iloc[0])
    rows = []
    for (s, r, v), g in df.groupby(['strategy', 'recipe', 'weights'], sort=False):
        untrained = v.startswith('zero-shot')
        if untrained and (s, r) != first: continue  # the same numbers for every strategy
        t = mcnemar_exact(right(g), zs[g.path].values)
        rows.append(dict(strategy='zero-shot' if untrained else s, recipe='' if untrained else r, weights=v,
                         images=len(g), log_loss=g.nll.mean(), accuracy=(g.pred == g.target).mean(), wrong=int((g.pred != g.target).sum()),
                         wrong_per_seed=[int((x.pred != x.target).sum()) for _,x in g.groupby('seed', sort=True)],
                         only_this_right=t['a_only'], only_zero_shot_right=t['b_only'], p_vs_zero_shot=t['p'],
                         fold_log_loss=[round(x, 4) for x in g.groupby('fold', sort=True).nll.mean()],
                         train_seconds=0.0 if untrained else g.drop_duplicates(['seed', 'fold']).train_seconds.sum()))
    return pd.DataFrame(rows)


def markdown(sm:pd.DataFrame, command:str, info:str)->str:
    "The summary as a report."
    out = ['# Recipe choices, cross-validated over train+val', '', f'Command: `{command}`', '', info, '',
           'Out-of-fold log loss (lower is better) and accuracy over the pooled train+val images, each predicted by '
           'the run that did not train on it. `alpha 1` is the fine-tuned run; `alpha 0` is where it started. '
           'Wrong: images misclassified (with several seeds: over all of them, then per seed). Against zero-shot: images only this one gets right / only zero-shot gets right, '
           "and McNemar's exact p. Train s: the folds' training seconds together (partial and full include the freeze "
           'run they start from). No test-split number is read.', '',
           '| strategy | recipe | weights | images | OOF log loss | OOF accuracy | wrong | against zero-shot | per fold: log loss | train s |',
           '|---|---|---|---|---|---|---|---|---|---|']
    for r in sm.itertuples():
        vs = '' if r.weights == 'zero-shot' else f"+{r.only_this_right} / -{r.only_zero_shot_right}, p = {r.p_vs_zero_shot:.2g}"
        wrong = f"{r.wrong}" + (f" ({' + '.join(map(str, r.wrong_per_seed))})" if len(r.wrong_per_seed) > 1 else '')
        out.append(f"| {r.strategy} | {r.recipe} | {r.weights} | {r.images} | {r.log_loss:.4f} | {r.accuracy:.2%} | {wrong} | {vs} | "
                   f"{' '.join(f'{x:.4f}' for x in r.fold_log_loss)} | {r.train_seconds:.0f} |")
    return '\n'.join(out) + '\n'


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--strategies', default='freeze,partial')
    ap.add_argument('--variants', default='dogft', help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument('--folds', type=int, default=5)
    ap.add_argument('--seeds', default='42', help='comma-separated training seeds; the report pools their out-of-fold predictions')
    ap.add_argument('--alphas', default=','.join(f'{a:g}' for a in ALPHAS))
    ap.add_argument('--breeds', default=None, help='comma-separated breeds (default: the five default breeds)')
    ap.add_argument('--data-dir', default=None, help='processed data to pool (default: $DOGFT_HOME/data/processed, made if missing)')
    ap.add_argument('--source', default=None, help='where to get the images if the data must be made (default: $DOGFT_SOURCE)')
    ap.add_argument('--tta', action='store_true', help='also predict each held-out image with horizontal-flip test-time augmentation (rows `... + flip`)')
    ap.add_argument('--pick-alpha', action='store_true', help='also score, per run, the alpha with the lowest log loss on its validation fold (needs --nested)')
    ap.add_argument('--nested', action='store_true', help='pick each run\'s best epoch on the next fold, not on the held-out one (trains on one fold fewer)')
    ap.add_argument('--work-dir', default=None, help='one folder per fold, finished runs reused (default: {tempdir}/dogft-bench/recipe_cv/{N}breeds-{K}folds[-nested])')
    ap.add_argument('--name', default=None, help='the report\'s name in --results (without it the report is only printed); the per-image predictions go to WORK_DIR/oof.csv')
    ap.add_argument('--results', default=str(benchlib.results_file(__file__)), help='the study\'s report file (default: results.json beside this script)')
    a = ap.parse_args()
    if bad := [v for v in a.variants.split(',') if v not in VARIANTS]: ap.error(f"unknown variant(s) {', '.join(bad)}: use {', '.join(VARIANTS)}")
    if a.folds < 2: ap.error('--folds must be at least 2')
    if a.pick_alpha and not a.nested: ap.error('--pick-alpha needs --nested: without it the validation fold is the held-out fold it would be scored on')
    if a.nested and a.folds < 3: ap.error('--nested needs at least 3 folds (train, pick the epoch, predict)')
    torch.set_num_threads(os.cpu_count())
    data_dir = ensure_data(a.data_dir, a.breeds, source=a.source, quiet=True)
    alphas = [float(x) for x in a.alphas.split(',')]
    work = Path(a.work_dir) if a.work_dir else benchlib.work_dir(
        'recipe_cv', f"{read_split(data_dir).breed.nunique()}breeds-{a.folds}folds" + ('-nested' if a.nested else ''))
    dirs = fold_dirs(data_dir, work, a.folds, nested=a.nested)
    machine = benchlib.machine_info()  # the code the runs start with
    rows = []
    seeds = [int(x) for x in a.seeds.split(',')]
    for seed in seeds:
        for v in a.variants.split(','):
            for s in a.strategies.split(','):
                for d in dirs:
                    t1 = time.time()
                    rows += fold_predictions(d, s, v, seed, alphas, a.tta, a.pick_alpha)
                    print(f'{v} {s} s{seed} {d.name}: {time.time() - t1:.0f} s', flush=True)
    df = pd.DataFrame(rows)
    command = benchlib.command_line(__file__)
    info = (f'{MODEL}, bundled weights, seed{"s" if len(seeds) > 1 else ""} {", ".join(map(str, seeds))}, {a.folds} stratified folds (random_state 0) over '
            f'{len(df.path.unique())} train+val images of {benchlib.show_path(data_dir)}'
            f'{f"; nested: each run trained on {a.folds - 2} folds, its best epoch picked on the next fold, the held-out fold only predicted" if a.nested else ""}. '
            + benchlib.machine_line(machine))
    sm = summary(df)
    if 'picked_alpha' in df:  # which alphas the validation folds picked, per strategy
        runs = df.dropna(subset=['picked_alpha']).drop_duplicates(['strategy', 'recipe', 'seed', 'fold'])
        info += ' Alpha picked on each run\'s validation fold (the lowest log loss there; `alpha picked on val` rows): ' + '; '.join(
            f"{s}: " + ', '.join(f'{a:g} ×{n}' for a,n in g.picked_alpha.value_counts().sort_index().items()) for s,g in runs.groupby('strategy', sort=False)) + '.'
    md = markdown(sm, command, info)
    atomic_write(work/'oof.csv', lambda p: df.to_csv(p, index=False))
    print(md)
    if a.name:
        rows = json.loads(sm.to_json(orient='records'))
        benchlib.save_report(a.results, a.name, dict(command=command, info=info, machine=machine, rows=rows), md)
        print(f"wrote report {a.name!r} to {a.results} and its .md")


if __name__ == '__main__': main()
