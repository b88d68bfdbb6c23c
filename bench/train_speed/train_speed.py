#!/usr/bin/env python
"""Training speed and test accuracy: the seed guide's plain-PyTorch loop against `dogft.train.train_run`.

Both methods train `efficientnet_lite0` (dogft's bundled ImageNet weights, new 5-way head) on the same
processed split, for each strategy (freeze, partial, full), one after the other in one process with the
same `torch.set_num_threads`, so the ratios are measured under the same conditions.

(a) seed-literal: torchvision `ImageFolder` over `data_dir/{train,val,test}/<breed>/`, every JPEG decoded
    every epoch (`RandomResizedCrop(224)` + `RandomHorizontalFlip` for training, `Resize(256)` +
    `CenterCrop(224)` for evaluation, `ToTensor`, ImageNet `Normalize`); `model.train()` every epoch (the
    frozen backbone's BatchNorm uses batch statistics and its running statistics drift); `requires_grad=False`
    on frozen parameters (freeze: classifier; partial: blocks.5, blocks.6, conv_head, bn2, classifier;
    full: everything); Adam over the trainable parameters, CrossEntropyLoss, CosineAnnealingLR(T_max=epochs),
    batch 32; validation every epoch, best-validation-loss weights saved and used for the test accuracy.
(b) dogft: `train_run(TrainConfig(model, strategy, seed=42, data_dir, out_dir, resume=False))` with its
    defaults (cached frozen-prefix features, light augmentation, early stopping, bf16 where supported).

Timing. (a): the sum of its epochs (train + validation + saving the best weights). (b): its one-time work --
building the uint8 image cache from the JPEGs (measured here, cold, before `train_run`) and the cached
prefix features (`training.feature_seconds`) and, for partial and full, the freeze run they start from
(`training.warm_start.seconds`) -- plus the sum of its epochs (`history[*].seconds`).
Model creation and the final test evaluation are left out of both. Seconds per epoch are computed from
the epochs each method actually ran, so dogft's early stopping does not flatter or penalise it; the
freeze ratio compares both at the configured number of epochs (dogft's per-epoch time times the
configured epochs plus its one-time work).

Usage (data: $DOGFT_HOME/data/processed, made from $DOGFT_SOURCE if missing, or --data-dir):
    python bench/train_speed/train_speed.py --quick                        # 2 epochs each, smoke check, printed only
    python bench/train_speed/train_speed.py --name 'five breeds'           # the full benchmark, into results.json/.md
    python bench/train_speed/train_speed.py --strategies freeze --seed-from bench/train_speed/results.json --name 'freeze again'
                                                                           # dogft only, beside the seed loop's earlier run
"""
from __future__ import annotations
import argparse, json, os, shutil, sys, tempfile, time, warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from dogft.data import ensure_data, read_split
from dogft.loaders import get_dls, get_test_dl
from dogft.models import create_model, model_data_config
from dogft.strategies import STRATEGY_DEFAULTS
from dogft.train import TrainConfig, resolve_config, train_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib

MODEL = 'efficientnet_lite0'
SEED = 42
BATCH = 32
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# what the seed guide trains, by module-name prefix (None: everything)
SEED_TRAINABLE = dict(freeze=('classifier.',),
                      partial=('blocks.5.', 'blocks.6.', 'conv_head.', 'bn2.', 'classifier.'),
                      full=None)
FREEZE_MIN, FREEZE_AIM, EPOCH_MAX, ACC_TOL = 10.0, 20.0, 0.7, 0.01


# ----------------------------------------------------------------------------------------------------------
# environment
def machine_info(threads:int, workers:int)->dict:
    "What the timings depend on (`benchlib.machine_info`), with the thread and worker counts of both methods."
    info = benchlib.machine_info(torch_threads=threads, dataloader_workers_seed=workers)
    return info | dict(load_avg_start=info.pop('load_avg', None))


def ensure_split(data_dir:Path|None, source=None)->Path:
    "A writable processed five-breed split at `data_dir` (default `$DOGFT_HOME/data/processed`; dogft writes its image cache there), made if missing."
    data_dir = ensure_data(data_dir, source=source, quiet=True).resolve()
    if not os.access(data_dir, os.W_OK): sys.exit(f"{data_dir} is not writable: dogft caches images there; pass another --data-dir")
    df = read_split(data_dir)
    for split in ('train', 'val', 'test'):  # ImageFolder must see exactly the split's files
        on_disk = sorted(str(p.relative_to(data_dir)) for p in (data_dir/split).rglob('*') if p.is_file())
        if on_disk != sorted(df.path[df.split == split]): sys.exit(f"{data_dir/split} does not match split.csv")
    return data_dir


# ----------------------------------------------------------------------------------------------------------
# (a) the seed guide's loop
def seed_loaders(data_dir:Path, workers:int)->dict[str, DataLoader]:
    "ImageFolder loaders that decode the JPEGs every epoch, with the seed guide's transforms."
    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), norm])
    eval_tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), norm])
    g = torch.Generator().manual_seed(SEED)
    return {s: DataLoader(datasets.ImageFolder(data_dir/s, train_tf if s == 'train' else eval_tf), batch_size=BATCH,
                          shuffle=s == 'train', num_workers=workers, generator=g if s == 'train' else None)
            for s in ('train', 'val', 'test')}


def seed_freeze(model:nn.Module, strategy:str)->list[nn.Parameter]:
    "Freeze like the seed guide: `requires_grad` only for the strategy's modules (BatchNorm included), nothing else."
    keep = SEED_TRAINABLE[strategy]
    for n, p in model.named_parameters(): p.requires_grad_(keep is None or n.startswith(keep))
    return [p for p in model.parameters() if p.requires_grad]


@torch.no_grad()
def evaluate(model:nn.Module, dl:DataLoader, loss_fn)->tuple[float, float]:
    "Mean loss and accuracy of `model` (eval mode) on `dl`."
    model.eval()
    loss = correct = n = 0
    for x, y in dl:
        out = model(x)
        loss += loss_fn(out, y).item()*len(y); correct += (out.argmax(1) == y).sum().item(); n += len(y)
    return loss/n, correct/n


def train_epoch(model:nn.Module, dl:DataLoader, loss_fn, opt)->tuple[float, float]:
    "One seed-guide training epoch: `model.train()` (all BatchNorm layers in training mode), forward through the whole network."
    model.train()
    loss = correct = n = 0
    for x, y in dl:
        opt.zero_grad()
        out = model(x)
        l = loss_fn(out, y)
        l.backward(); opt.step()
        loss += l.item()*len(y); correct += (out.argmax(1) == y).sum().item(); n += len(y)
    return loss/n, correct/n


def run_seed(strategy:str, data_dir:Path, epochs:int, workers:int, out_dir:Path)->dict:
    "Train and test with the seed guide's loop; epoch times include validation and saving the best weights."
    torch.manual_seed(SEED)
    lr = float(STRATEGY_DEFAULTS.loc[strategy, 'lr'])
    dls = seed_loaders(data_dir, workers)
    model = create_model(MODEL, len(dls['train'].dataset.classes), weights='auto')
    params = seed_freeze(model, strategy)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    best, best_path, history = float('inf'), out_dir/f'seed_{strategy}_best.pth', []
    for ep in range(1, epochs + 1):
        t0 = time.time()
        tl, ta = train_epoch(model, dls['train'], loss_fn, opt)
        vl, va = evaluate(model, dls['val'], loss_fn)
        sched.step()
        if vl < best: best, best_ep = vl, ep; torch.save(model.state_dict(), best_path)
        history.append(dict(epoch=ep, train_loss=tl, train_acc=ta, val_loss=vl, val_acc=va, seconds=time.time() - t0))
        print(f"  seed {strategy} epoch {ep}/{epochs}: train {tl:.3f}/{ta:.3f} val {vl:.3f}/{va:.3f} {history[-1]['seconds']:.1f}s", flush=True)
    model.load_state_dict(torch.load(best_path, weights_only=True))
    test_loss, test_acc = evaluate(model, dls['test'], loss_fn)
    epoch_s = sum(h['seconds'] for h in history)
    return dict(method='seed-literal', strategy=strategy, epochs_planned=epochs, epochs_run=len(history),
                best_epoch=best_ep, one_time_s=0.0, image_cache_s=0.0, feature_s=0.0, epoch_s=epoch_s,
                s_per_epoch=epoch_s/len(history), total_s=epoch_s, test_acc=test_acc, test_loss=test_loss,
                params_trainable=sum(p.numel() for p in params), precision='float32',
                notes=f'ImageFolder+PIL per epoch, num_workers={workers}', history=history)


def reused_seed_run(d:dict, path:str, strategy:str, epochs:int)->dict:
    "The seed-literal run of `strategy` from an earlier report `d` (`--seed-from path`: its loop has not changed), marked as reused."
    runs = [r for r in d['runs'] if r['method'] == 'seed-literal' and r['strategy'] == strategy]
    if not runs: sys.exit(f"{path} has no seed-literal {strategy} run: leave {strategy} out of --strategies or drop --seed-from")
    r = runs[-1]
    if r['epochs_planned'] != epochs: sys.exit(f"{path}'s seed-literal {strategy} run planned {r['epochs_planned']} epochs, not {epochs}: pass --epochs {r['epochs_planned']}")
    return r | dict(notes=f"{r['notes']}; reused from {path} (not rerun)")


# ----------------------------------------------------------------------------------------------------------
# (b) dogft
def build_image_cache(data_dir:Path, config:TrainConfig)->float:
    "Delete dogft's image cache and rebuild it (cold) the way `train_run` would; the seconds it took."
    shutil.rmtree(data_dir/'cache', ignore_errors=True)
    c = resolve_config(config)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dc = model_data_config(create_model(MODEL, 5, weights='none'))
    t0 = time.time()
    get_dls(data_dir, dc, augment=c.augment, bs=c.batch_size, seed=c.seed, device='cpu', verbose=False)
    if c.cache_features: get_test_dl(data_dir, dc, device='cpu', split='train', verbose=False)
    return time.time() - t0


def run_dogft(strategy:str, data_dir:Path, epochs:int|None, out_dir:Path)->dict:
    "Train and test with `dogft.train.train_run` and its defaults; one-time work separated from epochs."
    config = TrainConfig(model=MODEL, strategy=strategy, seed=SEED, epochs=epochs, data_dir=str(data_dir),
                         out_dir=str(out_dir/'dogft'), resume=False)
    cache_s = build_image_cache(data_dir, config)
    t0 = time.time()
    m = train_run(config, quiet=True)
    wall = time.time() - t0
    hist = m['history']
    epoch_s = sum(h['seconds'] for h in hist)
    feat_s = float(m['training'].get('feature_seconds', 0.0))
    warm_s = float(m['training'].get('warm_start', {}).get('seconds', 0.0))  # the freeze run partial/full start from
    for h in hist: print(f"  dogft {strategy} epoch {int(h['epoch'])}: val {h['val_loss']:.3f}/{h['val_acc']:.3f} {h['seconds']:.1f}s")
    return dict(method='dogft', strategy=strategy, epochs_planned=m['config']['epochs'], epochs_run=m['epochs_run'],
                best_epoch=m['best_epoch'], one_time_s=cache_s + feat_s + warm_s, image_cache_s=cache_s, feature_s=feat_s,
                warm_start_s=warm_s, epoch_s=epoch_s, s_per_epoch=epoch_s/len(hist), total_s=cache_s + feat_s + warm_s + epoch_s,
                test_acc=m['test_acc'], test_loss=m['test_loss'], params_trainable=m['params_trainable'],
                precision=m['precision'], train_run_wall_s=wall, dogft_train_seconds=m['train_seconds'],
                notes=f"features={m['training']['features']}" + (f", views={m['training']['views']}" if 'views' in m['training'] else '')
                      + f", augment={m['config']['augment']}, patience={m['config']['patience']}"
                      + (f", warm start from {m['training']['warm_start']['run']} ({warm_s:.0f} s, in one-time)" if warm_s else ''),
                history=hist)


# ----------------------------------------------------------------------------------------------------------
# comparison and report
def compare(strategy:str, a:dict, b:dict)->dict:
    "The strategy's target: freeze total-time ratio (a)/(b) at the same epochs; partial/full seconds-per-epoch (b)/(a)."
    acc_diff = b['test_acc'] - a['test_acc']
    if strategy == 'freeze':
        e = a['epochs_run']  # the seed loop never stops early: compare both at its epochs
        b_same = b['one_time_s'] + b['s_per_epoch']*e
        ratio = a['s_per_epoch']*e/b_same
        met = ratio >= FREEZE_MIN and acc_diff >= -1e-9
        return dict(strategy=strategy, metric=f'total time (a)/(b) at {e} epochs', ratio=ratio,
                    raw_total_ratio=a['total_s']/b['total_s'], dogft_total_at_same_epochs_s=b_same,
                    target=f'>= {FREEZE_MIN:g}x (aim {FREEZE_AIM:g}x), test acc (b) >= (a)', acc_diff=acc_diff,
                    met=met, aim_met=met and ratio >= FREEZE_AIM)
    ratio = b['s_per_epoch']/a['s_per_epoch']
    amortised = (b['one_time_s'] + b['epoch_s'])/b['epochs_run']/a['s_per_epoch']
    return dict(strategy=strategy, metric='seconds per epoch (b)/(a)', ratio=ratio, incl_one_time_ratio=amortised,
                target=f'<= {EPOCH_MAX:g}, test acc (b) >= (a) - 1 pt', acc_diff=acc_diff,
                met=ratio <= EPOCH_MAX and acc_diff >= -ACC_TOL - 1e-9)


def machine_line(info:dict, command:str)->list[str]:
    "Markdown lines for one run of this script: its command and the machine it ran on."
    v = info.get('versions') or info  # reports written before `benchlib` kept the versions at the top level
    load = lambda k: tuple(round(x, 2) for x in info[k]) if info.get(k) else None
    return [f'Command: `{command}`', '',
            f"Machine: {info['cpu']}, {info['cpu_count']} CPUs, torch threads {info['torch_threads']} (both methods), "
            f"seed loop DataLoader num_workers={info['dataloader_workers_seed']}; torch {v.get('torch')}, torchvision "
            f"{v.get('torchvision')}, timm {v.get('timm')}, fastai {v.get('fastai')}, dogft {v.get('dogft')} (git {info.get('git') or info.get('git_commit')}); "
            f"load average at start {load('load_avg_start')}, at end {load('load_avg_end')}. Data: {info['data_dir']} ({info['n_images']}).", '']


def median_epoch(r:dict)->float:
    "Median seconds of a run's epochs: less sensitive than the mean to load spikes from other users of the CPU."
    xs = sorted(h['seconds'] for h in r['history'])
    return (xs[(len(xs) - 1)//2] + xs[len(xs)//2])/2


def markdown(rows:list[dict], comps:list[dict], parts:list[tuple[str, dict]])->str:
    "The results as markdown: command and machine of each part (`(command, info)`), a table of runs, one of targets."
    out = ['# Training speed: seed-literal PyTorch loop (a) vs dogft `train_run` (b)', '']
    for command, info in parts: out += machine_line(info, command)
    reused = any('reused from' in r['notes'] for r in rows)
    out += ['Shared CPU: timings are noisy; both methods of a strategy ran back to back in one process, so compare within a strategy'
            + (' (except where a seed-literal row says it was reused: that loop ran in an earlier run, listed above).' if reused else '.'), '',
            '| strategy | method | epochs run / planned | best epoch | s/epoch (mean) | s/epoch (median) | one-time s (image cache + features + warm start) | total s | test acc | test loss | precision | notes |',
            '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        ot = (f"{r['one_time_s']:.1f} ({r['image_cache_s']:.1f} + {r['feature_s']:.1f} + {r.get('warm_start_s', 0.):.1f})"
              if r['method'] == 'dogft' else '0')
        out.append(f"| {r['strategy']} | {r['method']} | {r['epochs_run']} / {r['epochs_planned']} | {r['best_epoch']} | "
                   f"{r['s_per_epoch']:.2f} | {median_epoch(r):.2f} | {ot} | {r['total_s']:.1f} | {r['test_acc']:.1%} | "
                   f"{r['test_loss']:.3f} | {r['precision']} | {r['notes']} |")
    med = {(r['strategy'], r['method']): median_epoch(r) for r in rows}
    out += ['', '| strategy | measure | ratio | other | test acc (b) − (a) | target | met |', '|---|---|---|---|---|---|---|']
    for c in comps:
        s = c['strategy']
        other = (f"raw totals {c['raw_total_ratio']:.1f}x" if s == 'freeze' else
                 f"incl. one-time {c['incl_one_time_ratio']:.2f}; medians {med[(s, 'dogft')]/med[(s, 'seed-literal')]:.2f}")
        met = ('met' + (' (aim met)' if c.get('aim_met') else ' (aim not met)' if 'aim_met' in c else '')) if c['met'] else 'NOT met'
        out.append(f"| {s} | {c['metric']} | {c['ratio']:.2f} | {other} | {100*c['acc_diff']:+.1f} pt | {c['target']} | {met} |")
    out += ['', 'Seconds per epoch come from the epochs each method ran (dogft stops early after `patience` epochs '
            'without a lower validation loss); targets use the mean. dogft one-time work: the uint8 image cache built cold '
            'from the JPEGs (measured here) plus its cached frozen-prefix features (`training.feature_seconds`) and, for partial and full, '
            'the freeze run they start from (`training.warm_start.seconds`: its own features and epochs); all are in '
            'its total. Test accuracy is on 121 images: one image is 0.83 points.', '']
    return '\n'.join(out)


def write_report(rows:list[dict], comps:list[dict], parts:list[tuple[str, dict]], results:Path, name:str|None, final:bool=True):
    "Print the report; write it as `name` into `results` (after every strategy, so a long run keeps what it has measured)."
    md = markdown(rows, comps, parts) + ('' if final else '\n(partial results: the run is still going)\n')
    if final: print(md)
    if name:
        doc = dict(command=parts[0][0], machine=parts[0][1]) if len(parts) == 1 else dict(command=parts[0][0], parts=[dict(command=c, machine=i) for c, i in parts])
        benchlib.save_report(results, name, json.loads(json.dumps(doc | dict(runs=rows, comparisons=comps, complete=final), default=str)), md)
        print(f"wrote report {name!r} to {results} and its .md", flush=True)


def _parts(d:dict)->list[tuple[str, dict]]:
    "The (command, machine) of each run of this script that a report `d` holds."
    return [(p['command'], p['machine']) for p in d['parts']] if 'parts' in d else [(d['command'], d['machine'])]


def _report(spec:str)->dict:
    "A report named by `FILE` (its only report) or `FILE:NAME`."
    f,_,name = spec.partition(':') if not Path(spec).exists() else (spec, '', '')
    return benchlib.load_report(f, name or None)


def merge(specs:list[str], results:Path, name:str|None):
    "One report from several runs of this script (`FILE:NAME` each; e.g. one strategy rerun after an interruption)."
    rows, comps, parts = [], [], []
    for s in specs:
        d = _report(s)
        parts += [p for p in _parts(d) if p not in parts]
        rows += d['runs']; comps += d['comparisons']
    write_report(rows, comps, parts, results, name)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--strategies', default='freeze,partial,full', help='comma-separated strategies')
    p.add_argument('--epochs', type=int, default=None, help="epochs for both methods (default: each strategy's)")
    p.add_argument('--quick', action='store_true', help='2 epochs each: a smoke check')
    p.add_argument('--data-dir', type=Path, default=None, help='writable processed five-breed split (default: $DOGFT_HOME/data/processed, made if missing)')
    p.add_argument('--source', default=None, help='where to get the images if the data must be made (default: $DOGFT_SOURCE)')
    p.add_argument('--name', default=None, help="the report's name in --results (without it the report is only printed)")
    p.add_argument('--results', type=Path, default=benchlib.results_file(__file__), help="the study's report file (default: results.json beside this script)")
    p.add_argument('--threads', type=int, default=os.cpu_count(), help='torch.set_num_threads for both methods')
    p.add_argument('--workers', type=int, default=2, help="seed loop's DataLoader num_workers")
    p.add_argument('--work-dir', type=Path, default=None, help='checkpoints and dogft outputs (default: a temporary folder)')
    p.add_argument('--merge', nargs='+', default=None, help='no training: one report (--name) from these reports, each FILE:NAME (or FILE, its only report)')
    p.add_argument('--seed-from', default=None, help="reuse the seed-literal runs of this earlier report (FILE:NAME, or FILE) instead of rerunning them (dogft only is trained)")
    args = p.parse_args(argv)
    if args.merge: return merge(args.merge, args.results, args.name)
    epochs = 2 if args.quick and args.epochs is None else args.epochs
    strategies = [s.strip() for s in args.strategies.split(',') if s.strip()]
    torch.set_num_threads(args.threads)
    info = machine_info(args.threads, args.workers)
    data_dir = ensure_split(args.data_dir, args.source)
    df = read_split(data_dir)
    info.update(data_dir=benchlib.show_path(data_dir), n_images='/'.join(str((df.split == s).sum()) for s in ('train', 'val', 'test')))
    work = args.work_dir or Path(tempfile.mkdtemp(prefix='train_speed-'))
    work.mkdir(parents=True, exist_ok=True)
    command = benchlib.command_line(__file__, argv)
    rows, comps = [], []
    seed_from = _report(args.seed_from) if args.seed_from else None
    earlier = _parts(seed_from) if seed_from else []  # where the reused seed-literal runs were measured
    for s in strategies:
        e = epochs or int(STRATEGY_DEFAULTS.loc[s, 'epochs'])
        if seed_from: a = reused_seed_run(seed_from, args.seed_from, s, e)
        else:
            print(f"== {s}: seed-literal loop, {e} epochs", flush=True)
            torch.set_num_threads(args.threads)
            a = run_seed(s, data_dir, e, args.workers, work)
        print(f"== {s}: dogft train_run", flush=True)
        torch.set_num_threads(args.threads)
        b = run_dogft(s, data_dir, epochs, work)
        if torch.get_num_threads() != args.threads: print(f"warning: torch threads changed to {torch.get_num_threads()}")
        rows += [a, b]; comps.append(compare(s, a, b))
        print(f"== {s}: seed {a['s_per_epoch']:.2f} s/epoch, {a['total_s']:.0f} s, acc {a['test_acc']:.3f} | dogft "
              f"{b['s_per_epoch']:.2f} s/epoch + {b['one_time_s']:.1f} s one-time, {b['total_s']:.0f} s, acc {b['test_acc']:.3f} | "
              f"ratio {comps[-1]['ratio']:.2f} ({'met' if comps[-1]['met'] else 'NOT met'})", flush=True)
        info['load_avg_end'] = os.getloadavg()
        write_report(rows, comps, [(command, info)] + earlier, args.results, args.name, final=s == strategies[-1])
    if args.work_dir is None: shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
