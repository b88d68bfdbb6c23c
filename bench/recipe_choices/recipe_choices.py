#!/usr/bin/env python
"""Why the dogft recipe is what it is: each choice taken out in turn, measured on the validation split only.

For each strategy and seed, `dogft.train.train_run` trains `efficientnet_lite0` (bundled ImageNet weights)
with the dogft recipe, and with the recipe minus one choice (a "variant"). The report has the best
validation loss (the quantity early stopping and the best checkpoint are chosen on), the validation accuracy
of that checkpoint, the epochs run and the training seconds -- and, on purpose, nothing from the test split:
the recipe is chosen on these numbers, and the test split only reports the result (`dogft-analyze`).

Variants:
- `dogft`: the recipe as it is (`dogft.train.RECIPES['dogft']`);
- `no warm start`: partial and full start from the ImageNet head's rows instead of the freeze run's best weights;
- `BN in train mode`: `bn='train'`, what `model.train()` does to the BatchNorm layers of the trained stages;
- `lr_mult 1`: one learning rate for every trained stage and the head (no discriminative learning rates).

Each variant trains in its own folder under `--work-dir` (finished runs are reused, so an interrupted run of
this script continues). `--home` points the `dogft` variant at the folder of an existing
`dogft-run-all` matrix on the same split, whose finished runs are then reused instead of trained again.

Usage (see README.md beside this script for the command of the committed report):
    DOGFT_HOME=... python bench/recipe_choices/recipe_choices.py --strategies partial --seeds 42,43,44 --home "$DOGFT_HOME" --name 'five breeds'
"""
from __future__ import annotations
import argparse, statistics, sys, time
from pathlib import Path

from dogft.data import ensure_data, read_split
from dogft.train import TrainConfig, train_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib

MODEL = 'efficientnet_lite0'
VARIANTS = {'dogft': {}, 'no warm start': dict(warm_start=False), 'BN in train mode': dict(bn='train'), 'lr_mult 1': dict(lr_mult=1.0)}


def run_variant(name:str, strategy:str, seed:int, data_dir:Path, out_dir:Path)->dict:
    "Train (or reuse) one run of a variant; its validation numbers only."
    t0 = time.time()
    m = train_run(TrainConfig(model=MODEL, strategy=strategy, seed=seed, data_dir=str(data_dir), out_dir=str(out_dir),
                              **VARIANTS[name]), quiet=True)
    return dict(variant=name, strategy=strategy, seed=seed, best_val_loss=m['best_val_loss'], best_val_acc=m['best_val_acc'],
                best_epoch=m['best_epoch'], epochs_run=m['epochs_run'], train_seconds=m['train_seconds'],
                wall_s=round(time.time() - t0, 1), out_dir=benchlib.show_path(out_dir))


def markdown(rows:list[dict], command:str, info:str)->str:
    "Mean over seeds per strategy and variant, and every run."
    out = ['# Recipe choices, on the validation split only', '', f'Command: `{command}`', '', info, '',
           'Mean over the seeds of each run\'s best validation loss (lower is better), the validation accuracy of that '
           'checkpoint, epochs run and training seconds (partial and full include the freeze run they warm-start from). '
           'No test-split number is read: the recipe is chosen here, the test split only reports it.', '',
           '| strategy | variant | seeds | best val loss (mean) | per seed | val acc (mean) | epochs (mean) | train s (mean) |',
           '|---|---|---|---|---|---|---|---|']
    for s in dict.fromkeys(r['strategy'] for r in rows):
        for v in VARIANTS:
            rs = [r for r in rows if r['strategy'] == s and r['variant'] == v]
            if not rs: continue
            mean = lambda k: statistics.mean(r[k] for r in rs)
            out.append(f"| {s} | {v} | {','.join(str(r['seed']) for r in rs)} | {mean('best_val_loss'):.4f} | "
                       f"{', '.join('%.4f' % r['best_val_loss'] for r in rs)} | {mean('best_val_acc'):.1%} | {mean('epochs_run'):.1f} | "
                       f"{mean('train_seconds'):.0f} |")
    return '\n'.join(out) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--strategies', default='partial', help='comma-separated strategies')
    p.add_argument('--seeds', default='42,43,44', help='comma-separated seeds')
    p.add_argument('--variants', default=','.join(VARIANTS), help='comma-separated variants (of: ' + ', '.join(VARIANTS) + ')')
    p.add_argument('--data-dir', type=Path, default=None, help='processed split (default: $DOGFT_HOME/data/processed, made if missing)')
    p.add_argument('--source', default=None, help='where to get the images if the data must be made (default: $DOGFT_SOURCE)')
    p.add_argument('--work-dir', type=Path, default=None, help='one folder per variant (default: {tempdir}/dogft-bench/recipe_choices)')
    p.add_argument('--home', type=Path, default=None, help="reuse the finished dogft runs of this DOGFT_HOME (same split)")
    p.add_argument('--name', default=None, help="the report's name in --results, written after every run (without it the report is only printed)")
    p.add_argument('--results', default=str(benchlib.results_file(__file__)), help="the study's report file (default: results.json beside this script)")
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(',') if v.strip()]
    if unknown := [v for v in variants if v not in VARIANTS]: p.error(f"unknown variant(s) {unknown}: use {', '.join(VARIANTS)}")
    data_dir = ensure_data(args.data_dir, source=args.source, quiet=True)
    work = args.work_dir or benchlib.work_dir('recipe_choices')
    df = read_split(data_dir)
    machine = benchlib.machine_info()
    info = (benchlib.machine_line(machine) + " Finished runs are reused, not retrained. "
            f"Data: {benchlib.show_path(data_dir)} ({'/'.join(str((df.split == s).sum()) for s in ('train', 'val', 'test'))}).")
    command = benchlib.command_line(__file__, argv)
    rows = []
    for s in [x.strip() for x in args.strategies.split(',') if x.strip()]:
        for seed in [int(x) for x in args.seeds.split(',') if x.strip()]:
            for v in variants:
                out_dir = args.home if v == 'dogft' and args.home else work/v.replace(' ', '-')
                rows.append(run_variant(v, s, seed, data_dir, out_dir))
                r = rows[-1]
                print(f"{s} s{seed} {v}: best val loss {r['best_val_loss']:.4f}, val acc {r['best_val_acc']:.3f}, "
                      f"{r['epochs_run']} epochs, {r['train_seconds']:.0f} s", flush=True)
                if args.name:  # after every run, atomically: an interrupted benchmark keeps what it measured
                    benchlib.save_report(args.results, args.name, dict(command=command, info=info, machine=machine, runs=rows),
                                         markdown(rows, command, info))
    print(markdown(rows, command, info))


if __name__ == '__main__':
    main()
