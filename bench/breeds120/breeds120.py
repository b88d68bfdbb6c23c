"""The 120-breed results: dogft's strategies on all of Stanford Dogs with its official split, on this machine.

Each run is the real thing in a process of its own, in one `DOGFT_HOME` (`--home`), under `/usr/bin/time -v` for its
wall time and peak RSS: `dogft-train ...` for a trained run, `dogft.train.zero_shot_run` for a zero-shot head. A run
whose metrics file exists is not run again; its timing is kept from the report that measured it. From the runs'
metrics on the official test split (8,580 images), the report gives for each run its accuracy with the Wilson 95%
interval, macro-F1, and McNemar's exact test against the zero-shot head of its model; the mean of the seeds where
there are several; and a soft-voting ensemble (mean probabilities) of the two architectures' runs with the best
*validation* accuracy. Nothing is chosen on the test split.

    python bench/breeds120/breeds120.py --source ../shared/data/stanford-dogs-120 --runs zs-lite0,freeze-lite0-s42 --name 'official split'

`--runs` picks runs by id (`--list` shows them); the report covers every run of the list whose metrics exist.
"""
import argparse, base64, json, os, re, subprocess, sys, time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from dogft.core import DogftError, run_name
from dogft.analysis import mcnemar_exact, t_interval, wilson_interval

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib

# id → (model, strategy, seed, recipe); zero-shot heads have strategy 'zero-shot', seed 0
RUNS = {
    'zs-lite0': ('efficientnet_lite0', 'zero-shot', 0, 'dogft'),
    'freeze-lite0-s42': ('efficientnet_lite0', 'freeze', 42, 'dogft'),
    'freeze-lite0-s43': ('efficientnet_lite0', 'freeze', 43, 'dogft'),
    'freeze-lite0-s44': ('efficientnet_lite0', 'freeze', 44, 'dogft'),
    'partial-lite0-s42': ('efficientnet_lite0', 'partial', 42, 'dogft'),
    'full-lite0-s42': ('efficientnet_lite0', 'full', 42, 'dogft'),
    'seed-freeze-lite0-s42': ('efficientnet_lite0', 'freeze', 42, 'seed'),
    'seed-partial-lite0-s42': ('efficientnet_lite0', 'partial', 42, 'seed'),
    'zs-lite2': ('efficientnet_lite2', 'zero-shot', 0, 'dogft'),
    'freeze-lite2-s42': ('efficientnet_lite2', 'freeze', 42, 'dogft'),
}


def metrics_path(home:Path, run_id:str)->Path:
    model,strategy,seed,recipe = RUNS[run_id]
    name = run_name(model, strategy, seed, recipe)
    return home/'results'/'metrics'/f'{name}_results.json'


def command(run_id:str)->list[str]:
    "The command that makes run `run_id`."
    model,strategy,seed,recipe = RUNS[run_id]
    if strategy == 'zero-shot': return [sys.executable, '-c', f"from dogft.train import zero_shot_run; zero_shot_run({model!r})"]
    exe = Path(sys.executable).parent/'dogft-train'
    return [str(exe) if exe.exists() else 'dogft-train', '--model', model, '--strategy', strategy, '--seed', str(seed), '--recipe', recipe]


def timed(cmd:list[str], env:dict, log:Path)->dict:
    "Run `cmd` under `/usr/bin/time -v`, its output teed to `log`: wall seconds, peak RSS (MiB), exit status."
    t0 = time.perf_counter()
    with open(log, 'w') as f:
        p = subprocess.Popen(['/usr/bin/time', '-v', *cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = []
        for line in p.stdout:
            f.write(line); f.flush(); out.append(line)
            if not line.startswith('\t'): print('   ', line.rstrip(), flush=True)
        rc = p.wait()
    text = ''.join(out)
    m = re.search(r'Maximum resident set size \(kbytes\): (\d+)', text)
    return dict(seconds=round(time.perf_counter() - t0, 1), peak_rss_mib=round(int(m[1])/1024) if m else None, rc=rc)


def correct_bits(m:dict)->tuple[list[str], np.ndarray]:
    "Test image paths (sorted) and whether the run got each right."
    p = sorted(m['test_predictions'], key=lambda r: r['path'])
    return [r['path'] for r in p],np.array([r['true'] == r['predicted'] for r in p], bool)


def probs_of(m:dict)->tuple[list[str], np.ndarray, list[str]]:
    "Test image paths (sorted), probabilities `[N, C]` and true classes."
    p = sorted(m['test_predictions'], key=lambda r: r['path'])
    return [r['path'] for r in p],np.array([r['probabilities'] for r in p], np.float32),[r['true'] for r in p]


def pack(bits:np.ndarray)->str: return base64.b64encode(np.packbits(bits).tobytes()).decode()


def row_of(run_id:str, m:dict, zs:dict|None, timing:dict|None)->dict:
    paths,ok = correct_bits(m)
    k,n = int(ok.sum()),len(ok)
    lo,hi = wilson_interval(k, n)
    r = dict(id=run_id, model=m['model'], strategy=m['strategy'], recipe=(m.get('config') or {}).get('recipe', 'dogft'), seed=m['seed'],
             test_acc=k/n, ci=[lo, hi], n_test=n, macro_f1=m.get('macro_f1'), best_val_acc=m.get('best_val_acc'),
             epochs_run=m.get('epochs_run'), best_epoch=m.get('best_epoch'), train_seconds=m.get('train_seconds'),
             eval_seconds=m.get('eval_seconds'), engine=(m.get('training') or {}).get('engine'), views=(m.get('training') or {}).get('views'),
             device=m.get('device'), correct_b64=pack(ok))
    if zs is not None and m['strategy'] != 'zero-shot':
        zp,zok = correct_bits(zs)
        if zp != paths: raise DogftError(f"{run_id} and its zero-shot head were scored on different test images")
        r['vs_zero_shot'] = mcnemar_exact(ok, zok)  # a_only: this run right, zero-shot wrong
    if timing: r['command'],r['wall_seconds'],r['peak_rss_mib'] = timing.get('command'),timing['seconds'],timing['peak_rss_mib']
    return r


def ensemble_row(members:list[tuple[str, dict]], zs:dict|None)->dict:
    "Soft voting: the mean of the members' test probabilities."
    got = [probs_of(m) for _,m in members]
    paths,_,true = got[0]
    for (i,_),(p,_,_) in zip(members, got):
        if p != paths: raise DogftError(f"ensemble member {i} was scored on other test images")
    vocab = members[0][1]['class_names']
    if any(m['class_names'] != vocab for _,m in members): raise DogftError("ensemble members have different classes")
    pred = np.mean([pr for _,pr,_ in got], 0).argmax(1)
    ok = np.array([vocab[j] == t for j,t in zip(pred, true)], bool)
    k,n = int(ok.sum()),len(ok)
    r = dict(id='ensemble', model=' + '.join(m['model'] for _,m in members), strategy='soft vote of ' + ', '.join(i for i,_ in members),
             recipe='dogft', seed=None, test_acc=k/n, ci=list(wilson_interval(k, n)), n_test=n, members=[i for i,_ in members], correct_b64=pack(ok))
    if zs is not None: r['vs_zero_shot'] = mcnemar_exact(ok, correct_bits(zs)[1])
    r['vs_members'] = {i: mcnemar_exact(ok, correct_bits(m)[1]) for i,m in members}
    return r


def strategy_pairs(ms:dict)->list[dict]:
    "McNemar between the strategies of one model, recipe and seed (partial and full against freeze, full against partial)."
    by = {(m['model'], (m.get('config') or {}).get('recipe', 'dogft'), m['seed'], m['strategy']): (rid, m) for rid,m in ms.items()}
    out = []
    for (model, recipe, seed, strategy),(rid, m) in by.items():
        for other in {'partial': ['freeze'], 'full': ['freeze', 'partial']}.get(strategy, []):
            if (o := by.get((model, recipe, seed, other))) is None: continue
            paths,a = correct_bits(m)
            opaths,b = correct_bits(o[1])
            if paths != opaths: raise DogftError(f"{rid} and {o[0]} were scored on different test images")
            out.append(dict(a=rid, b=o[0]) | mcnemar_exact(a, b))
    return out


def fmt_p(p): return '<0.001' if p < 1e-3 else f'{p:.3f}'


def run_label(r:dict)->str:
    if r['id'] == 'ensemble': return f"ensemble: mean probabilities of {' and '.join(r['members'])}"
    recipe = ' (seed recipe)' if r['recipe'] == 'seed' else ''
    return f"{r['model']} {r['strategy']}{recipe}" + (f", seed {r['seed']}" if r['seed'] else '')


def cells(r:dict)->list[str]:
    "The table cells of row `r` after its label."
    vs,f1,ts,ws,rss,ep = r.get('vs_zero_shot'),r.get('macro_f1'),r.get('train_seconds'),r.get('wall_seconds'),r.get('peak_rss_mib'),r.get('epochs_run')
    return [f"{100*r['test_acc']:.1f}% [{100*r['ci'][0]:.1f}, {100*r['ci'][1]:.1f}]",
            '' if f1 is None else f'{f1:.3f}',
            '' if not vs else f"{vs['a_only']} / {vs['b_only']}, p {fmt_p(vs['p'])}",
            '' if not ts else f'{ts/60:.1f} min',
            '' if ws is None else f'{ws/60:.1f} min',
            '' if rss is None else f'{rss/1024:.2f} GiB',
            '' if ep is None or r['strategy'] == 'zero-shot' else f"{ep} ({r['best_epoch']})"]


def markdown(rows:list[dict], seeds:list[dict], data:dict, cmd:str, machine:dict, missing:dict, pairs:list[dict])->str:
    L = ['| run | test accuracy [95% CI] | macro-F1 | McNemar vs its zero-shot head: only this right / only zero-shot right, p | train time | wall time | peak RSS | epochs (best) |',
         '|---|---|---:|---|---:|---:|---:|---:|']
    L += [f"| {run_label(r)} | {' | '.join(cells(r))} |" for r in rows]
    sp = data.get('per_split') or {}
    out = ['# 120 breeds, official split', '', f"`{cmd}` — {datetime.now(timezone.utc).isoformat(timespec='seconds')}", '',
           f"- data: {data.get('rows', 0):,} images of {data.get('breeds', '?')} breeds: train {sp.get('train', 0):,}, validation {sp.get('val', 0):,} "
           f"(a stratified 15% of the official train split, seed 42), test {sp.get('test', 0):,} (the official test split)",
           f"- machine: {benchlib.machine_line(machine)}",
           "- train time: the run's own `train_seconds` (feature caching and epochs; a partial run's includes its freeze run's); "
           "wall time and peak RSS: the whole command under `/usr/bin/time -v`, evaluation included",
           '', *L]
    for s in seeds:
        out += ['', f"{s['label']}: mean test accuracy {100*s['mean']:.2f}% over seeds {', '.join(map(str, s['seeds']))} "
                    f"(t 95% interval [{100*s['low']:.2f}, {100*s['high']:.2f}]; per seed {', '.join(f'{100*a:.2f}%' for a in s['accs'])})"]
    for r in rows:
        for m,q in r.get('vs_members', {}).items():
            out += ['', f"The ensemble against {m} (McNemar): {q['a_only']} right only by the ensemble, {q['b_only']} only by {m}, p {fmt_p(q['p'])}."]
    for q in pairs:
        out += ['', f"{q['a']} against {q['b']} (McNemar on the same {q['n']:,} test images): {q['a_only']} right only by the first, "
                    f"{q['b_only']} only by the second, p {fmt_p(q['p'])}."]
    if missing: out += ['', 'Not in this report:', *[f"- {k}: {v}" for k,v in missing.items()]]
    return '\n'.join(out)


def data_info(home:Path)->dict:
    from dogft.loaders import split_table
    df = split_table(home/'data'/'processed')
    return dict(rows=len(df), breeds=int(df.breed.nunique()), per_split={s: int((df.split == s).sum()) for s in ('train', 'val', 'test')},
                split_sha256=df.attrs['sha256'])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--source', default=os.environ.get('DOGFT_SOURCE', '../shared/data/stanford-dogs-120'), help='the 120-breed folder')
    p.add_argument('--home', default=str(benchlib.work_dir('breeds120', 'home')), help='DOGFT_HOME of the runs (default: {tempdir}/dogft-bench/breeds120/home)')
    p.add_argument('--runs', default='', help=f"comma-separated run ids to make when missing: {', '.join(RUNS)}")
    p.add_argument('--not-run', action='append', default=[], metavar='ID=REASON', help='a run of the list left out, and why (said in the report)')
    p.add_argument('--list', action='store_true', help='list the run ids and their commands, and stop')
    p.add_argument('--name', default=None, help="the report's name in --results (without it the report is only printed)")
    p.add_argument('--results', default=str(benchlib.results_file(__file__)), help='the report file (default: results.json beside this script)')
    a = p.parse_args(argv)
    if a.list:
        for k in RUNS: print(f"{k:24} {' '.join(command(k)[-9:])}")
        return 0
    home = Path(a.home).resolve(); home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DOGFT_HOME=str(home), PYTHONUNBUFFERED='1')
    old = benchlib.load_reports(a.results).get(a.name or '', {}) if Path(a.results).exists() else {}
    timings = dict(old.get('timings', {}))
    if not (home/'data'/'processed'/'split.csv').exists():
        exe = Path(sys.executable).parent/'dogft-data'
        cmd = [str(exe) if exe.exists() else 'dogft-data', '--source', a.source, '--breeds', 'all', '--split', 'official']
        print(' '.join(cmd[-6:]), flush=True)
        t = timed(cmd, env, home/'data.log')
        if t['rc']: raise DogftError(f"dogft-data failed ({t['rc']}): see {home/'data.log'}")
        timings['data'] = t | dict(command=shlex_join(cmd))
    wanted = [r.strip() for r in a.runs.split(',') if r.strip()]
    if bad := [r for r in wanted if r not in RUNS]: raise DogftError(f"unknown run id(s) {', '.join(bad)}: see --list")
    for rid in wanted:
        if metrics_path(home, rid).exists(): continue
        cmd = command(rid)
        print(f"{rid}: {' '.join(cmd[-9:])}", flush=True)
        t = timed(cmd, env, home/f'{rid}.log')
        if t['rc']: raise DogftError(f"{rid} failed ({t['rc']}): see {home/(rid + '.log')}")
        timings[rid] = t | dict(command=shlex_join(cmd))
    ms = {rid: json.loads(metrics_path(home, rid).read_text()) for rid in RUNS if metrics_path(home, rid).exists()}
    zs = {m['model']: m for rid,m in ms.items() if m['strategy'] == 'zero-shot'}
    rows = [row_of(rid, m, zs.get(m['model']), timings.get(rid)) for rid,m in ms.items()]
    seeds = []
    for model in sorted({r['model'] for r in rows}):
        for strat in ('freeze', 'partial', 'full'):
            rs = [r for r in rows if r['model'] == model and r['strategy'] == strat and r['recipe'] == 'dogft']
            if len(rs) > 1:
                mean,lo,hi = t_interval([r['test_acc'] for r in rs])
                seeds.append(dict(label=f'{model} {strat}', seeds=[r['seed'] for r in rs], accs=[r['test_acc'] for r in rs], mean=mean, low=lo, high=hi))
    trained = [(rid, m) for rid,m in ms.items() if m['strategy'] != 'zero-shot']
    best = {}
    for rid,m in trained:  # each architecture's run with the best validation accuracy
        if m['model'] not in best or m['best_val_acc'] > best[m['model']][1]['best_val_acc']: best[m['model']] = (rid, m)
    if len(best) >= 2: rows.append(ensemble_row(sorted(best.values()), zs.get('efficientnet_lite0')))
    pairs = strategy_pairs(ms)
    missing = dict(kv.split('=', 1) for kv in a.not_run)
    missing.update({rid: 'not run yet' for rid in RUNS if rid not in ms and rid not in missing})
    data = data_info(home)
    # the command that makes every run of the report again (from an empty --home), whichever runs this invocation made
    cmd = benchlib.command_line(__file__, ['--source', a.source, '--runs', ','.join(ms), *sum((['--not-run', kv] for kv in a.not_run), []), '--name', a.name or 'NAME'])
    machine = benchlib.machine_info()
    md = markdown(rows, seeds, data, cmd, machine, missing, pairs)
    print(md)
    if a.name:
        benchlib.save_report(a.results, a.name, dict(command=cmd, data=data, rows=rows, seed_means=seeds, strategy_pairs=pairs, timings=timings, not_run=missing, machine=machine), md)
        print(f"wrote report {a.name!r} to {benchlib.show_path(a.results)} and its .md")
    return 0


def shlex_join(cmd): import shlex; return shlex.join([benchlib.show_path(c) if os.path.isabs(c) else c for c in cmd])


if __name__ == '__main__':
    try: sys.exit(main())
    except DogftError as e:
        print(f"breeds120.py: error: {e}", file=sys.stderr); sys.exit(2)
