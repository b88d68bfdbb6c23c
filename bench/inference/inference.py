"""Inference benchmark: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8, in one run, on this CPU.

Latency (median of interleaved runs) at batch 1 and 32, throughput, size and test accuracy of the exported model
(`models/best_model_{model}.onnx` and `.int8.onnx` from `dogft-export --quantize int8`) and of the checkpoint it came from,
with the same thread count for PyTorch (`torch.set_num_threads`) and ONNX Runtime (intra-op threads). Targets, as ratios
measured in the same run: ORT fp32 batch-1 latency <= 0.7x PyTorch eager; int8 <= 0.6x fp32 latency, <= 30% of the fp32
size, test accuracy within 1 point.

    python bench/inference/inference.py                        # $DOGFT_HOME (or .) models/ and results/, printed only
    python bench/inference/inference.py --threads 1,2 --repeats 50 --name 'five breeds'

`--name NAME` writes the report (table, command, machine) as NAME into results.json and results.md beside this script.
"""
import argparse, io, os, sys, time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from dogft.core import DogftError, dogft_home, sha256_file
from dogft.predict import Classifier, PredictError, default_model
from dogft import export as ex

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib

TARGETS = dict(fp32_vs_torch=0.7, int8_vs_fp32=0.6, int8_size=0.30, int8_acc_points=1.0)

def timings(fns:dict, x:np.ndarray, repeats:int, warmup:int=2)->tuple[dict, dict]:
    "Wall-clock and process CPU time (ms) of every timed run per engine; engines take turns so machine load hits them alike."
    for f in fns.values():
        for _ in range(warmup): f(x)
    wall,cpu = {k: [] for k in fns},{k: [] for k in fns}
    for _ in range(repeats):
        for k,f in fns.items():
            c0,t0 = time.process_time(),time.perf_counter(); f(x)
            wall[k].append(1000*(time.perf_counter() - t0)); cpu[k].append(1000*(time.process_time() - c0))
    return wall,cpu

def torch_size(model)->int:
    "Bytes of the model's state dict saved with `torch.save` (what a PyTorch deployment ships)."
    buf = io.BytesIO(); torch.save(model.state_dict(), buf)
    return buf.tell()

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out-dir', default=None, help='root of models/ and results/ (default: $DOGFT_HOME, else .)')
    p.add_argument('--model', default=None, help='fp32 .onnx (default: the newest models/best_model_*.onnx); its .int8.onnx sits beside it')
    p.add_argument('--threads', default='1', help='comma-separated thread counts, each used for PyTorch and ONNX Runtime alike (default: 1)')
    p.add_argument('--repeats', type=int, default=100, help='timed runs per engine at batch 1 (default: 100)')
    p.add_argument('--repeats-32', type=int, default=5, help='timed runs per engine at batch 32 (default: 5)')
    p.add_argument('--name', default=None, help="the report's name in --results (without it the report is only printed)")
    p.add_argument('--results', default=str(benchlib.results_file(__file__)), help="the study's report file (default: results.json beside this script)")
    a = p.parse_args(argv)
    root = Path(a.out_dir) if a.out_dir else dogft_home()
    fp32 = Path(a.model) if a.model else default_model(root/'models')
    int8 = fp32.with_name(fp32.name.removesuffix('.onnx') + '.int8.onnx')
    if not int8.exists(): raise DogftError(f"{int8} does not exist: run dogft-export --quantize int8")
    meta = Classifier(fp32).meta
    run = ex.pick_run(root, meta['run'])
    model,ck = ex.load_run_model(run['checkpoint'])
    if meta.get('checkpoint_sha256') and meta['checkpoint_sha256'] != sha256_file(run["checkpoint"]):
        print(f"warning: {run['checkpoint']} changed since {fp32.name} was exported", file=sys.stderr)
    dc = ex.export_data_config(ck['data_config'])
    x,y = ex.eval_images(ex.run_data_dir(root, run), dc, ck['class_names'])
    machine = benchlib.machine_info()  # its load average: before the timed runs
    load0 = os.getloadavg()
    t_start = time.time()
    sizes = dict(pytorch=torch_size(model), onnx_fp32=fp32.stat().st_size, onnx_int8=int8.stat().st_size)
    rows,acc = [],{}
    for nt in [int(t) for t in a.threads.split(',')]:
        with ex.torch_threads(nt):
            fns = ex.engines(model, onnx_fp32=fp32, onnx_int8=int8)
            if not acc: acc = {k: float((ex.logits_of(f, x, dc).argmax(1) == y).mean()) for k,f in fns.items()}
            xb = lambda n: ex.normalize(np.resize(x, (n, *x.shape[1:])), dc)
            (t1,c1),(t32,_) = timings(fns, xb(1), a.repeats),timings(fns, xb(32), a.repeats_32, warmup=1)
        for k in fns:
            rows.append(dict(engine=k, threads=nt, b1=float(np.median(t1[k])), b1_min=float(np.min(t1[k])), b1_cpu=float(np.median(c1[k])),
                             b32=float(np.median(t32[k])),
                             tput=32000/float(np.median(t32[k])), mb=sizes[k]/2**20, acc=acc[k]))
    load1 = os.getloadavg()
    names = dict(pytorch='PyTorch eager (fp32)', onnx_fp32='ONNX Runtime fp32', onnx_int8='ONNX Runtime int8 (QDQ)')
    L = ['| engine | threads | latency b=1, median (min) ms | CPU time b=1, median ms | latency b=32, median ms | throughput b=32, img/s | size MB | test acc |',
         '|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        L.append(f"| {names[r['engine']]} | {r['threads']} | {r['b1']:.2f} ({r['b1_min']:.2f}) | {r['b1_cpu']:.2f} | {r['b32']:.1f} | {r['tput']:.1f} | "
                 f"{r['mb']:.2f} | {r['acc']:.2%} |")
    T = ['| target | threads | measured | limit | met |', '|---|---:|---:|---:|:---:|']
    targets = []  # the same, for the JSON
    ok = True
    for nt in sorted({r['threads'] for r in rows}):
        R = {r['engine']: r for r in rows if r['threads'] == nt}
        checks = [('ORT fp32 / PyTorch eager, batch-1 latency', R['onnx_fp32']['b1']/R['pytorch']['b1'], TARGETS['fp32_vs_torch'], '≤'),
                  ('int8 / fp32 ORT, batch-1 latency', R['onnx_int8']['b1']/R['onnx_fp32']['b1'], TARGETS['int8_vs_fp32'], '≤'),
                  ('int8 / fp32 ORT, batch-32 latency (info)', R['onnx_int8']['b32']/R['onnx_fp32']['b32'], TARGETS['int8_vs_fp32'], '≤'),
                  ('int8 / fp32 ORT, batch-1 min latency (info)', R['onnx_int8']['b1_min']/R['onnx_fp32']['b1_min'], TARGETS['int8_vs_fp32'], '≤'),
                  ('int8 / fp32 ORT, batch-1 CPU time (info)', R['onnx_int8']['b1_cpu']/R['onnx_fp32']['b1_cpu'], TARGETS['int8_vs_fp32'], '≤')]
        for name,v,lim,op in checks:
            met = v <= lim
            if '(info)' not in name: ok &= met
            T.append(f"| {name} | {nt} | {v:.2f}× | {op} {lim}× | {'yes' if met else 'NO'} |")
            targets.append(dict(target=name, threads=nt, measured=v, unit='x', limit=lim, met=met))
    size_ratio,drop = sizes['onnx_int8']/sizes['onnx_fp32'],100*(acc['pytorch'] - acc['onnx_int8'])
    T.append(f"| int8 / fp32 file size | – | {size_ratio:.1%} | ≤ {TARGETS['int8_size']:.0%} | {'yes' if size_ratio <= TARGETS['int8_size'] else 'NO'} |")
    T.append(f"| int8 accuracy drop vs PyTorch | – | {drop:.2f} points | ≤ {TARGETS['int8_acc_points']} | {'yes' if drop <= TARGETS['int8_acc_points'] else 'NO'} |")
    targets += [dict(target='int8 / fp32 file size', threads=None, measured=size_ratio, unit='share', limit=TARGETS['int8_size'], met=size_ratio <= TARGETS['int8_size']),
                dict(target='int8 accuracy drop vs PyTorch', threads=None, measured=drop, unit='points', limit=TARGETS['int8_acc_points'],
                     met=drop <= TARGETS['int8_acc_points'])]
    ok &= size_ratio <= TARGETS['int8_size'] and drop <= TARGETS['int8_acc_points']
    m = dict(machine, logical_cores=machine['cpu_count'], **{k: machine['versions'].get(k) for k in ('torch', 'onnxruntime', 'onnx')})
    cmd = benchlib.command_line(__file__, argv)
    md = '\n'.join([f"# Inference benchmark: {meta['run']}", '',
        f"`{cmd}` — {datetime.now(timezone.utc).isoformat(timespec='seconds')}, {time.time() - t_start:.0f} s", '',
        f"- model: `{fp32.name}` / `{int8.name}` (opset {meta.get('opset')}), checkpoint `{Path(run['checkpoint']).name}`, "
        f"{len(y)} test images at {dc['input_size'][1]}×{dc['input_size'][2]}",
        f"- machine: {m['cpu']}, {m['logical_cores']} logical cores, {m['platform']}; load average {load0[0]:.1f} before, {load1[0]:.1f} after",
        f"- software: Python {m['python']}, torch {m['torch']}, onnxruntime {m['onnxruntime']}, onnx {m['onnx']}",
        f"- threads: `torch.set_num_threads(n)` and ONNX Runtime `intra_op_num_threads=n` (inter-op 1) for each n in the table; "
        f"PyTorch in `inference_mode`, ONNX Runtime with all graph optimisations, CPU provider",
        f"- latency: median of {a.repeats} (batch 1) and {a.repeats_32} (batch 32) timed runs per engine, the engines taking turns; "
        f"throughput = 32 / batch-32 latency; accuracy on the whole test split",
        "- CPU time: `time.process_time()` around each batch-1 run (all threads of the process); on a machine shared with other work "
        "it shows what the run itself cost, where wall-clock latency also counts the time the scheduler gave to others", '',
        *L, '', f"Targets (ratios measured in this run): {'all met' if ok else 'NOT all met'}", '', *T, '',
        *([f"Note: the load average ({max(load0[0], load1[0]):.1f}) exceeded the {m['logical_cores']} cores: other processes took the CPU "
           "during the timed runs, and each preemption adds a scheduler time slice (a few ms) to a run's wall-clock time — a large share of a "
           "short int8 run. The CPU-time and minimum-latency ratios show what the engines themselves cost.", '']
          if max(load0[0], load1[0]) > (m['logical_cores'] or 1) else [])])
    print(md)
    if a.name:
        data = dict(command=cmd, run=meta['run'], model=fp32.name, opset=meta.get('opset'), test_images=len(y), machine=machine,
                    load_avg=[load0[0], load1[0]], rows=[dict(r, engine=names[r['engine']]) for r in rows], targets=targets, all_met=ok)
        benchlib.save_report(a.results, a.name, data, md)
        print(f"wrote report {a.name!r} to {a.results} and its .md")
    return 0 if ok else 1

if __name__ == '__main__':
    try: sys.exit(main())
    except (DogftError, PredictError) as e:
        print(f"inference.py: error: {e}", file=sys.stderr); sys.exit(2)
