"""Scale benchmark: dogft's throughput on the 120-breed data next to ONNX Runtime fp32 on the same batches, on this CPU.

One run measures, in this order:
1. `dogft-data --source SRC --breeds all --split official --force` into the `home` folder of the work folder (a subprocess): wall time, images/s and
   peak RSS (`/usr/bin/time -v`; see `run_data` for why not `getrusage(RUSAGE_CHILDREN)`).
2. A fixed, stratified subsample of the official test split (`--per-breed` images of each of the 120 breeds, seed 42) as a
   processed folder of its own (its `split.csv` lists only those rows; the images are the ones `dogft-data` wrote), and
   its uint8 image cache (`dogft.loaders.cached_images`, timed).
3. Zero-shot as `dogft.train.zero_shot_run` does it: `imagenet_zero_shot` + `predict_probs` over `get_test_dl` (batch 32,
   fp32; on the CPU `predict_probs` runs the network in ONNX Runtime through `dogft.engine`). Next to it, on the same
   batches taken out of that loader: the same network in PyTorch without the loader, and ONNX Runtime fp32 running the
   file `dogft.export.export_onnx` writes (the reference).
4. Feature caching as the freeze strategy does it: `apply_strategy(..., 'freeze')`, `split_frozen`, `prefix_features` over
   `get_test_dl(bs=64)` (plain NCHW, as a run builds it when ONNX Runtime runs the prefix) at the freeze recipe's precision (fp32; ONNX Runtime through `dogft.engine`).
   Next to it, on the same batches: the prefix in PyTorch without the loader (with `--ab`, in four variants: contiguous /
   channels_last × fp32 / bf16 autocast), and ONNX Runtime fp32 running the exported prefix.
5. Freeze end to end and the peak memory of zero-shot and freeze on the whole 120-breed data: read from
   `bench/breeds120/results.json` (its `official split` report), where `dogft-train --strategy freeze` and the zero-shot
   head ran as commands of their own under `/usr/bin/time -v`.

Every engine runs `--rounds` full passes over the subsample, engines taking turns each round; a rate is images / summed
seconds. PyTorch gets `torch.set_num_threads(n)`, ONNX Runtime `intra_op_num_threads=n` (inter-op 1). Targets (issue 27):
zero-shot and feature caching >= 0.8x ONNX Runtime's images/s; peak memory of each step under 4 GiB; freeze end to end
on the prepared data <= 10 minutes.

    python bench/scale/scale.py --source ../shared/data/stanford-dogs-120 --name 'official split, lite0'

`--name NAME` writes the report as NAME into results.json and results.md beside this script.
"""
import argparse, os, re, resource, shutil, subprocess, sys, time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from dogft.core import DogftError
from dogft.loaders import cached_images, cache_spec, get_test_dl, split_table
from dogft.models import imagenet_zero_shot, model_data_config
from dogft.strategies import apply_strategy
from dogft.features import split_frozen, prefix_features
from dogft.train import predict_probs
from dogft import export as ex

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib

TARGETS = dict(ratio=0.8, rss_gib=4.0, freeze_minutes=10.0)
BREEDS120 = Path(__file__).resolve().parents[1]/'breeds120'/'results.json'


def whole_data_runs(path)->dict:
    "The runs of `bench/breeds120`'s `official split` report that were timed as commands: id → row (wall seconds, peak RSS, command...)."
    p = Path(path)
    if not p.exists(): return {}
    rep = benchlib.load_reports(p).get('official split', {})
    return {r['id']: r for r in rep.get('rows', []) if r.get('wall_seconds') is not None}


def run_data(source:str, home:Path)->dict:
    """`dogft-data --breeds all --split official --force` into `home`: wall seconds, peak RSS, rows.

    Peak RSS comes from `/usr/bin/time -v` (its "Maximum resident set size"): `getrusage(RUSAGE_CHILDREN)` in this process
    reports the child's high-water mark including the memory of this (torch-loaded) process at the fork before `exec`,
    so it overstates a child started from here; it is recorded too, as `rusage_children_mib`."""
    exe = Path(sys.executable).parent/'dogft-data'
    cmd = [str(exe) if exe.exists() else 'dogft-data', '--source', source, '--breeds', 'all', '--split', 'official', '--force']
    timer = Path('/usr/bin/time')
    env = dict(os.environ, DOGFT_HOME=str(home))
    t0 = time.perf_counter()
    r = subprocess.run(([str(timer), '-v'] if timer.exists() else []) + cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024  # KiB on Linux
    if r.returncode: raise DogftError(f"dogft-data failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    m = re.search(r'Maximum resident set size \(kbytes\): (\d+)', r.stderr)
    df = split_table(home/'data'/'processed')
    return dict(seconds=dt, peak_rss_mib=int(m[1])/1024 if m else children, peak_rss_by='/usr/bin/time -v' if m else 'getrusage(RUSAGE_CHILDREN)',
                rusage_children_mib=children, rows=len(df),
                per_split={s: int((df.split == s).sum()) for s in ('train', 'val', 'test')}, breeds=int(df.breed.nunique()))


def subsample(processed:Path, sub:Path, per_breed:int, seed:int=42):
    "A processed folder at `sub` whose `split.csv` lists `per_breed` test images of each breed (the images stay where they are)."
    df = split_table(processed)
    t = df[df.split == 'test']
    t = t.sample(frac=1., random_state=seed).groupby('breed').head(per_breed).sort_values('path')
    if sub.exists(): shutil.rmtree(sub)
    sub.mkdir(parents=True)
    (sub/'test').symlink_to((processed/'test').resolve(), target_is_directory=True)
    t.to_csv(sub/'split.csv', index=False)
    return split_table(sub)


def timed_rounds(fns:dict, rounds:int)->tuple[dict, dict]:
    "(wall, process CPU) seconds of each full pass of each engine, engines taking turns each round, after one untimed warm-up batch each; and each engine's last output."
    for f,warm in fns.values(): warm()
    secs,outs = {k: [] for k in fns},{}
    for _ in range(rounds):
        for k,(f,_) in fns.items():
            c0,t0 = time.process_time(),time.perf_counter(); outs[k] = f(); secs[k].append((time.perf_counter() - t0, time.process_time() - c0))
    return secs,outs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--source', default=os.environ.get('DOGFT_SOURCE', '../shared/data/stanford-dogs-120'),
                   help='the 120-breed folder (default: $DOGFT_SOURCE, else ../shared/data/stanford-dogs-120)')
    p.add_argument('--model', default='efficientnet_lite0', help='timm model (default: efficientnet_lite0, bundled weights)')
    p.add_argument('--per-breed', type=int, default=4, help='test images of each breed in the subsample (default: 4, i.e. 480)')
    p.add_argument('--rounds', type=int, default=2, help='timed passes over the subsample per engine (default: 2)')
    p.add_argument('--threads', type=int, default=2, help='threads for PyTorch and ONNX Runtime alike (default: 2)')
    p.add_argument('--work-dir', default=str(benchlib.work_dir('scale')), help='where the data and exports go (default: {tempdir}/dogft-bench/scale)')
    p.add_argument('--ab', action='store_true', help='also time the PyTorch prefix with channels_last and bf16 autocast (the A/B of the first report)')
    p.add_argument('--breeds120', default=str(BREEDS120), help="bench/breeds120's report file, for the freeze wall time and the commands' peak memory")
    p.add_argument('--name', default=None, help="the report's name in --results (without it the report is only printed)")
    p.add_argument('--results', default=str(benchlib.results_file(__file__)), help="the study's report file (default: results.json beside this script)")
    a = p.parse_args(argv)
    work = Path(a.work_dir); work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(a.threads)
    machine = benchlib.machine_info()
    load0,t_start = os.getloadavg(),time.time()

    # 1. dogft-data on the whole folder
    print('dogft-data --breeds all --split official ...', flush=True)
    data = run_data(a.source, work/'home')
    print(f"  {data['rows']} rows in {data['seconds']:.1f} s, peak RSS {data['peak_rss_mib']:.0f} MiB", flush=True)

    # 2. the subsample and its image cache
    sub = work/'subsample'
    df = subsample(work/'home'/'data'/'processed', sub, a.per_breed)
    n,vocab = len(df),sorted(df.breed.unique())
    net = imagenet_zero_shot(a.model, vocab, 'auto')
    dc = model_data_config(net)
    t0 = time.perf_counter(); cached_images(sub, 'test', cache_spec(dc, 'eval'), verbose=False, table=df); t_cache = time.perf_counter() - t0
    print(f"  subsample: {n} test images of {len(vocab)} breeds; image cache built in {t_cache:.1f} s", flush=True)
    inp = tuple(dc['input_size'])

    # 3. zero-shot: dogft's path (loader + predict_probs) | the same network on the same batches | ORT fp32
    dl_zs = get_test_dl(sub, dc, device='cpu', verbose=False, table=df)  # batch 32, as zero_shot_run
    zs_batches = [(xb.as_subclass(torch.Tensor).contiguous(), yb.as_subclass(torch.Tensor)) for xb,yb in dl_zs]
    y = torch.cat([b[1] for b in zs_batches]).numpy()
    zs_onnx = ex.export_onnx(net, work/f'{a.model}_zero_shot.onnx', inp)
    s_zs = ex.ort_session(zs_onnx, a.threads)
    in_zs = s_zs.get_inputs()[0].name
    zs_np = [x.numpy() for x,_ in zs_batches]
    def zs_torch(xs=zs_batches):
        with torch.inference_mode(): return torch.cat([net(x) for x,_ in xs])
    def zs_ort(xs=zs_np): return np.concatenate([s_zs.run(None, {in_zs: x})[0] for x in xs])
    zs_fns = {'dogft': (lambda: predict_probs(net, dl_zs)[0], lambda: zs_torch(zs_batches[:1])),
              'torch': (zs_torch, lambda: zs_torch(zs_batches[:1])), 'ort': (zs_ort, lambda: zs_ort(zs_np[:1]))}
    print('  timing zero-shot ...', flush=True)
    zs_t,zs_out = timed_rounds(zs_fns, a.rounds)
    acc_zs = {k: float((np.asarray(v).argmax(1) == y).mean()) for k,v in zs_out.items()}

    # 4. feature caching: the freeze strategy's frozen prefix
    model = imagenet_zero_shot(a.model, vocab, 'auto')
    apply_strategy(model, 'freeze', bn='eval')
    prefix,suffix = split_frozen(model)
    prefix.eval(); suffix.eval()
    dl_f = get_test_dl(sub, dc, bs=64, device='cpu', channels_last=False, verbose=False, table=df)  # as _build_loaders when ONNX Runtime runs the prefix
    f_batches = [xb.as_subclass(torch.Tensor).contiguous() for xb,_ in dl_f]
    f_cl = [x.contiguous(memory_format=torch.channels_last) for x in f_batches]
    f_np = [x.numpy() for x in f_batches]
    f_onnx = ex.export_onnx(prefix, work/f'{a.model}_prefix.onnx', inp, output_names=('features',))
    s_f = ex.ort_session(f_onnx, a.threads)
    in_f = s_f.get_inputs()[0].name
    def prefix_run(xs, bf16):
        def f():
            with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
                return torch.cat([prefix(x).float() for x in xs])
        return f
    def f_ort(xs=f_np): return torch.from_numpy(np.concatenate([s_f.run(None, {in_f: x})[0] for x in xs]))
    f_fns = {'dogft': (lambda: prefix_features(prefix, dl_f, precision='fp32', quiet=True), prefix_run(f_cl[:1], False)),
             **{f"torch {'bf16' if bf else 'fp32'}{' channels_last' if cl else ''}": (prefix_run(xs, bf), prefix_run(xs[:1], bf))
                for bf in (False, True) for cl,xs in ((False, f_batches), (True, f_cl)) if a.ab or (cl and not bf)},
             'ort': (f_ort, lambda: f_ort(f_np[:1]))}
    print('  timing feature caching ...', flush=True)
    f_t,f_out = timed_rounds(f_fns, a.rounds)
    feats,yf = {k: v for k,v in f_out.items() if k != 'dogft'},f_out['dogft'][1].numpy()
    feats['dogft'] = f_out['dogft'][0]
    with torch.inference_mode():
        acc_f = {k: float((suffix(v.float()).argmax(1).numpy() == yf).mean()) for k,v in feats.items()}
        ref = feats['torch fp32 channels_last']  # PyTorch fp32: the features' reference
        diff = {k: float((v.float() - ref).abs().max()) for k,v in feats.items()}
    load1 = os.getloadavg()
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024

    # report
    rate = lambda ts: a.rounds*n/sum(w for w,_ in ts)
    cpu = lambda ts: sum(c for _,c in ts)
    zr = {k: rate(v) for k,v in zs_t.items()}
    fr = {k: rate(v) for k,v in f_t.items()}
    data_rate = data['rows'] / data['seconds']
    targets = [
        dict(target='zero-shot, dogft / ONNX Runtime fp32 images/s', measured=zr['dogft']/zr['ort'], limit=TARGETS['ratio'], op='≥'),
        dict(target='feature caching, dogft / ONNX Runtime fp32 images/s', measured=fr['dogft']/fr['ort'], limit=TARGETS['ratio'], op='≥'),
        dict(target='dogft-data peak RSS, GiB', measured=data['peak_rss_mib']/1024, limit=TARGETS['rss_gib'], op='<')]
    whole = whole_data_runs(a.breeds120)
    for rid,what in (('zs-lite0', 'zero-shot'), ('freeze-lite0-s42', 'freeze')):
        if rid in whole: targets.append(dict(target=f'{what} on the whole data (command), peak RSS, GiB', measured=whole[rid]['peak_rss_mib']/1024, limit=TARGETS['rss_gib'], op='<'))
    if 'freeze-lite0-s42' in whole:
        targets.append(dict(target='freeze end to end on the prepared data (dogft-train), minutes', measured=whole['freeze-lite0-s42']['wall_seconds']/60, limit=TARGETS['freeze_minutes'], op='≤'))
    for t in targets: t['met'] = dict(zip(('≥', '≤', '<'), (t['measured'] >= t['limit'], t['measured'] <= t['limit'], t['measured'] < t['limit'])))[t['op']]
    ok = all(t['met'] for t in targets)
    rows = [dict(step='dogft-data (all 120 breeds, official split)', engine='dogft-data', images=data['rows'], seconds=data['seconds'], images_per_s=data_rate),
            dict(step='image cache of the subsample (decode, resize, crop)', engine='dogft cached_images', images=n, seconds=t_cache, images_per_s=n/t_cache)]
    names_zs = {'dogft': 'dogft: get_test_dl + predict_probs (fp32, dogft.engine)', 'torch': 'PyTorch, same network, same batches (no loader)',
                'ort': 'ONNX Runtime fp32, same batches'}
    for k,v in zs_t.items(): rows.append(dict(step='zero-shot (120-class ImageNet head)', engine=names_zs[k], images=a.rounds*n, seconds=sum(w for w,_ in v), cpu_seconds=cpu(v),
                                               rounds=[w for w,_ in v], images_per_s=zr[k], vs_ort=zr[k]/zr['ort'], test_acc=acc_zs[k]))
    names_f = {'dogft': 'dogft: get_test_dl + prefix_features (fp32, dogft.engine)', 'ort': 'ONNX Runtime fp32, same batches'}
    for k,v in f_t.items(): rows.append(dict(step='feature caching (frozen prefix)', engine=names_f.get(k, f'PyTorch prefix, {k.removeprefix("torch ")}, same batches (no loader)'),
                                              images=a.rounds*n, seconds=sum(w for w,_ in v), cpu_seconds=cpu(v), rounds=[w for w,_ in v], images_per_s=fr[k], vs_ort=fr[k]/fr['ort'],
                                              test_acc=acc_f.get(k), max_abs_diff_vs_fp32=diff.get(k)))
    cmd = benchlib.command_line(__file__, argv)
    L = ['| step | engine | images | seconds | CPU seconds | images/s | ÷ ORT fp32 | top-1 on the subsample |', '|---|---|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        L.append(f"| {r['step']} | {r['engine']} | {r['images']:,} | {r['seconds']:.1f} | {format(r['cpu_seconds'], '.1f') if 'cpu_seconds' in r else ''} | {r['images_per_s']:.1f} | "
                 f"{'' if 'vs_ort' not in r else format(r['vs_ort'], '.2f') + '×'} | {'' if r.get('test_acc') is None else format(r['test_acc'], '.1%')} |")
    T = ['| target | measured | limit | met |', '|---|---:|---:|:---:|']
    for t in targets: T.append(f"| {t['target']} | {t['measured']:.2f} | {t['op']} {t['limit']} | {'yes' if t['met'] else 'NO'} |")
    ab = dict(channels_last=fr['torch fp32 channels_last']/fr['torch fp32'], bf16=fr['torch bf16']/fr['torch fp32'],
              bf16_channels_last=fr['torch bf16 channels_last']/fr['torch fp32']) if a.ab else None
    fz = whole.get('freeze-lite0-s42')
    md = '\n'.join([f"# Scale benchmark: {a.model}, 120 breeds, official split", '',
        f"`{cmd}` — {datetime.now(timezone.utc).isoformat(timespec='seconds')}, {time.time() - t_start:.0f} s", '',
        f"- dogft-data: {data['rows']:,} images ({', '.join(f'{k} {v:,}' for k,v in data['per_split'].items())}), {data['breeds']} breeds, "
        f"{data['seconds']:.1f} s = {data_rate:.0f} images/s, peak RSS {data['peak_rss_mib']:.0f} MiB (`{data['peak_rss_by']}`)",
        f"- subsample: {n} test images ({a.per_breed} of each breed, seed 42) at {inp[1]}×{inp[2]}; {a.rounds} timed passes per engine, engines taking turns; "
        f"images/s = images / wall seconds; CPU seconds = `time.process_time()` of this process over the passes (all its threads)",
        f"- threads: {a.threads} (`torch.set_num_threads`, ONNX Runtime intra-op; inter-op 1); ONNX files from `dogft.export.export_onnx` "
        f"(`torch.onnx.export(dynamo=False)`, opset {ex.OPSET}, simplified)",
        f"- machine: {machine['cpu']}, {machine['cpu_count']} logical cores, {machine['platform']}; load average {load0[0]:.1f} before, {load1[0]:.1f} after; "
        f"this process's peak RSS {self_rss:.0f} MiB",
        f"- software: Python {machine['python']}, torch {machine['versions'].get('torch')}, timm {machine['versions'].get('timm')}, "
        f"onnxruntime {machine['versions'].get('onnxruntime')}", '',
        *L, '', f"Targets: {'all met' if ok else 'NOT all met'}", '', *T, '',
        *([f"PyTorch prefix on the same batches, relative to contiguous fp32: channels_last {ab['channels_last']:.2f}×, bf16 autocast {ab['bf16']:.2f}×, "
           f"bf16 + channels_last {ab['bf16_channels_last']:.2f}×; bf16 features differ from fp32 by up to {diff['torch bf16 channels_last']:.3g} "
           f"(ORT: {diff['ort']:.3g}) and give {acc_f['torch bf16 channels_last']:.1%} top-1 through the zero-shot head against fp32's {acc_f['torch fp32']:.1%}.", ''] if ab else []),
        f"dogft's features differ from PyTorch fp32's by up to {diff['dogft']:.3g} (ONNX Runtime's own file: {diff['ort']:.3g}).", '',
        (f"Freeze end to end on the prepared 120-breed data (`bench/breeds120`, `{fz['command']}`): {fz['wall_seconds']/60:.1f} min wall, "
         f"of which {fz['train_seconds']/60:.1f} min the run's own feature caching and epochs ({fz['views']} views of each training image), "
         f"peak RSS {fz['peak_rss_mib']/1024:.2f} GiB." if fz else "Freeze end to end: no `freeze-lite0-s42` run in `bench/breeds120/results.json` yet.")])
    print(md)
    if a.name:
        out = dict(command=cmd, model=a.model, threads=a.threads, per_breed=a.per_breed, subsample_images=n, rounds=a.rounds,
                   data=data, rows=rows, targets=targets, all_met=ok, ab=ab, whole_data=whole,
                   bench_peak_rss_mib=self_rss, machine=machine, load_avg=[load0[0], load1[0]], seconds=time.time() - t_start)
        benchlib.save_report(a.results, a.name, out, md)
        print(f"wrote report {a.name!r} to {benchlib.show_path(a.results)} and its .md")
    return 0 if ok else 1


if __name__ == '__main__':
    try: sys.exit(main())
    except DogftError as e:
        print(f"scale.py: error: {e}", file=sys.stderr); sys.exit(2)
