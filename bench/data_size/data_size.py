#!/usr/bin/env python
"""Which strategy for how much data: each strategy trained on fewer training images per breed, scored on the test split.

The comparison table answers "which strategy" for the full training split only. This script draws `--sizes`
training images per breed (a stratified random subset of the training split, drawn with the run's seed, so each seed
also sees other images), keeps the validation and test splits whole, and trains every strategy with the `dogft`
recipe on each subset (`dogft.train.train_run`, one folder per subset under `--work-dir`; finished runs are reused,
and a partial or full run starts from the freeze run of its own subset). The zero-shot head (untrained, so the same at
every size) is the baseline. It is a measurement for the docs' advice: nothing in the recipe is chosen by it.
`--head-init random` starts the new head from random weights instead of the ImageNet head's rows for the breeds
(what a run on classes ImageNet does not have starts from), so that the curve shows what the images themselves buy.

Usage (see README.md beside this script for the commands of the committed reports):
    DOGFT_HOME=... python bench/data_size/data_size.py --sizes 5,10,25,50,all --strategies freeze,partial,full --seeds 42 \
        --name 'five breeds'
"""
from __future__ import annotations
import argparse, json, os, sys, time
from pathlib import Path

import pandas as pd
import torch

from dogft.analysis import n_correct
from dogft.core import atomic_write
from dogft.data import ensure_data, read_split
from dogft.train import TrainConfig, train_run, zero_shot_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib

MODEL = 'efficientnet_lite0'


def subset_dir(data_dir:Path, work_dir:Path, size:int|None, seed:int)->Path:
    "A processed folder whose training split is `size` images per breed drawn with `seed` (`None`: all of them); validation and test whole."
    df = read_split(data_dir)
    train = df[df.split == 'train']
    if size is not None:
        if (short := train.breed.value_counts()).min() < size:
            raise SystemExit(f"error: --sizes {size} is more than the {short.min()} training images of {short.idxmin()}: use smaller sizes or `all`")
        train = train.groupby('breed', group_keys=False).sample(size, random_state=seed)
    d = work_dir/f"n{size or 'all'}_s{seed}"
    d.mkdir(parents=True, exist_ok=True)
    for sub in ('train', 'val', 'test'):
        if not (d/sub).exists(): (d/sub).symlink_to((data_dir/sub).resolve())
    new = pd.concat([train, df[df.split != 'train']]).to_csv(index=False)
    if not (d/'split.csv').exists() or (d/'split.csv').read_text() != new: atomic_write(d/'split.csv', lambda p: Path(p).write_text(new))
    return d


def run_row(d:Path, strategy:str, seed:int, size:int|None, head_init:str='auto')->dict:
    "Train (or reuse) `strategy` on subset folder `d`; its test accuracy, right answers, epochs and seconds."
    runs = d/('runs' if head_init == 'auto' else f'runs-head-{head_init}')  # runs of another head init beside, not over, the recipe's
    m = train_run(TrainConfig(model=MODEL, strategy=strategy, seed=seed, head_init=head_init, data_dir=str(d), out_dir=str(runs)), quiet=True)
    return dict(size='all' if size is None else size, n_train=int((read_split(d).split == 'train').sum()), strategy=strategy, seed=seed,
                test_acc=m['test_acc'], test_right=n_correct(m), n_test=len(m['test_predictions']), best_val_acc=m['best_val_acc'],
                epochs=m['epochs_run'], train_seconds=m['train_seconds'])


def summary(df:pd.DataFrame)->pd.DataFrame:
    "Per size and strategy: mean test accuracy, the right answers of each seed, mean seconds."
    g = df.groupby(['size', 'n_train', 'strategy'], sort=False)
    return g.agg(test_acc=('test_acc', 'mean'), right=('test_right', lambda s: ', '.join(map(str, s))),
                 train_seconds=('train_seconds', 'mean')).reset_index()


def markdown(sm:pd.DataFrame, zs:dict, command:str, info:str)->str:
    "The report: a table of sizes × strategies, the zero-shot head above it."
    strategies = list(dict.fromkeys(sm.strategy))
    lines = ['# Test accuracy by training images per breed', '', f'Command: `{command}`', '', info, '',
             f"Zero-shot ImageNet head (untrained, the same at every size): {zs['test_acc']:.1%} "
             f"({n_correct(zs)} of {len(zs['test_predictions'])} test images).", '',
             'Each cell: mean test accuracy over seeds (right answers per seed), mean training seconds (partial and full include the freeze run they start from).', '',
             '| training images per breed | ' + ' | '.join(strategies) + ' |', '|---|' + '---|'*len(strategies)]
    for (size, n), rows in sm.groupby(['size', 'n_train'], sort=False):
        r = rows.set_index('strategy')
        cells = [f"{r.test_acc[s]:.1%} ({r.right[s]}), {r.train_seconds[s]:.0f} s" if s in r.index else '–' for s in strategies]
        lines.append(f"| {size} ({n} in all) | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', default='5,10,25,50,all', help='training images per breed, comma-separated; `all`: the whole training split')
    ap.add_argument('--strategies', default='freeze,partial,full')
    ap.add_argument('--seeds', default='42', help='comma-separated; each seed draws its own subsets')
    ap.add_argument('--breeds', default=None, help='comma-separated breeds (default: the five default breeds)')
    ap.add_argument('--data-dir', default=None, help='processed data (default: $DOGFT_HOME/data/processed, made if missing)')
    ap.add_argument('--source', default=None, help='where to get the images if the data must be made (default: $DOGFT_SOURCE)')
    ap.add_argument('--head-init', default='auto', help="the new head's start (`TrainConfig.head_init`): auto (the recipe's: the ImageNet head's rows), or random, as for classes ImageNet does not have")
    ap.add_argument('--work-dir', default=None, help='one folder per subset, finished runs reused (default: {tempdir}/dogft-bench/data_size/{N}breeds)')
    ap.add_argument('--name', default=None, help='the report\'s name in --results (without it the report is only printed)')
    ap.add_argument('--results', default=str(benchlib.results_file(__file__)), help='the study\'s report file (default: results.json beside this script)')
    a = ap.parse_args()
    try: sizes = [None if s == 'all' else int(s) for s in a.sizes.split(',')]
    except ValueError: sizes = [0]
    if any(s is not None and s < 1 for s in sizes): ap.error(f'--sizes {a.sizes}: give positive numbers of images per breed, or all, e.g. 5,10,all')
    torch.set_num_threads(os.cpu_count())
    machine = benchlib.machine_info()  # the code the runs start with
    data_dir = ensure_data(a.data_dir, a.breeds, source=a.source, quiet=True)
    work = Path(a.work_dir) if a.work_dir else benchlib.work_dir('data_size', f"{read_split(data_dir).breed.nunique()}breeds")
    rows = []
    for seed in [int(x) for x in a.seeds.split(',')]:
        for size in sizes:
            d = subset_dir(data_dir, work, size, seed)
            for s in a.strategies.split(','):
                t0 = time.time()
                rows.append(run_row(d, s, seed, size, a.head_init))
                print(f"n{size or 'all'} {s} s{seed}: test {rows[-1]['test_acc']:.1%}, {time.time() - t0:.0f} s", flush=True)
    zs = zero_shot_run(MODEL, data_dir=str(d), out_dir=str(work/'zero-shot'), quiet=True)
    sm = summary(pd.DataFrame(rows))
    rows.append(dict(size=0, n_train=0, strategy='zero-shot', seed=0, test_acc=zs['test_acc'], test_right=n_correct(zs),
                     n_test=len(zs['test_predictions']), best_val_acc=zs['best_val_acc'], epochs=0, train_seconds=0.0))  # the baseline, in the JSON beside the runs
    df = pd.DataFrame(rows)
    head = '' if a.head_init == 'auto' else f" with head_init={a.head_init}"
    info = (f"{MODEL}, bundled weights, `dogft` recipe{head}; data {benchlib.show_path(data_dir)} ({', '.join(sorted(read_split(data_dir).breed.unique()))}), "
            f"validation and test splits whole. " + benchlib.machine_line(machine))
    command = benchlib.command_line(__file__)
    md = markdown(sm, zs, command, info)
    print(md)
    if a.name:
        benchlib.save_report(a.results, a.name, dict(command=command, info=info, machine=machine, rows=json.loads(df.to_json(orient='records'))), md)
        print(f"wrote report {a.name!r} to {a.results} and its .md")


if __name__ == '__main__': main()
