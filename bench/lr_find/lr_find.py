#!/usr/bin/env python
"""fastai's learning-rate finder beside the recipe's learning rates: what `dogft-train --lr-find` suggests per strategy.

For each strategy, `dogft.train.find_lr` runs fastai's `Learner.lr_find` on the learner that run would train
(`efficientnet_lite0`, bundled weights, the same starting weights and cached features; partial and full start from
their freeze run, trained first when missing) and the report has fastai's `valley` and `slide` suggestions next
to the learning rate the recipe uses. The finder keeps nothing it trains. The recipe's rates are not taken from the
finder: they were checked by cross-validation (`bench/recipe_cv`); this report shows how far
fastai's rule of thumb is from them on this data, for a user tuning another model or another breed set.

Usage:
    DOGFT_HOME=... python bench/lr_find/lr_find.py --strategies freeze,partial,full --name 'five breeds'
"""
from __future__ import annotations
import argparse, os, sys, time
from pathlib import Path

import torch

from dogft.data import ensure_data
from dogft.train import TrainConfig, find_lr, resolve_config, train_run, warm_start_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib

MODEL = 'efficientnet_lite0'


def markdown(rows:list[dict], command:str, info:str)->str:
    "The report: one row per strategy."
    out = ['# Learning-rate finder against the recipe', '', f'Command: `{command}`', '', info, '',
           "fastai's suggestions (`valley`, `slide`) from `Learner.lr_find` (100 steps from 1e-7 to 10, every parameter group at "
           "the same rate), for the head's learning rate; the recipe's rate is what `dogft-train` uses without `--lr`. "
           "Seconds: the finder alone (a partial or full run's freeze run is trained first if missing, not counted).", '',
           "| strategy | recipe's lr | valley | slide | valley / recipe's | seconds |", '|---|---|---|---|---|---|']
    out += [f"| {r['strategy']} | {r['lr']:.1e} | {r['valley']:.1e} | {r['slide']:.1e} | {r['valley'] / r['lr']:.2g} | {r['seconds']:.0f} |" for r in rows]
    return '\n'.join(out) + '\n'


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--strategies', default='freeze,partial,full')
    ap.add_argument('--seed', type=int, default=42)
    ap.add_argument('--data-dir', default=None, help='processed data (default: $DOGFT_HOME/data/processed, made if missing)')
    ap.add_argument('--source', default=None, help='where to get the images if the data must be made (default: $DOGFT_SOURCE)')
    ap.add_argument('--name', default=None, help='the report\'s name in --results (without it the report is only printed)')
    ap.add_argument('--results', default=str(benchlib.results_file(__file__)), help='the study\'s report file (default: results.json beside this script)')
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    data_dir = ensure_data(a.data_dir, source=a.source, quiet=True)
    rows = []
    for s in a.strategies.split(','):
        c = resolve_config(TrainConfig(model=MODEL, strategy=s, seed=a.seed, data_dir=str(data_dir)))
        if c.warm_start and s != 'freeze': train_run(warm_start_config(c), quiet=True)  # its freeze run first, outside the timing
        t0 = time.time()
        found = find_lr(c, quiet=True)
        rows.append(dict(strategy=s, lr=found['lr'], valley=found['valley'], slide=found['slide'], seconds=round(time.time() - t0, 1)))
        print(rows[-1], flush=True)
    machine = benchlib.machine_info()
    info = benchlib.machine_line(machine) + f" Data: {benchlib.show_path(data_dir)}."
    command = benchlib.command_line(__file__)
    md = markdown(rows, command, info)
    print(md)
    if a.name:
        benchlib.save_report(a.results, a.name, dict(command=command, info=info, machine=machine, rows=rows), md)
        print(f"wrote report {a.name!r} to {a.results} and its .md")


if __name__ == '__main__': main()
