"""Ray benchmark: the same run matrix through `dogft-run-all` here and through a local Ray instance with 2 CPUs, on this machine.

Each matrix runs in a fresh DOGFT_HOME holding a copy of the same prepared data, so only the matrix is timed. The Ray
instance is started first with `ray start --head --num-cpus 2` (timed on its own) and the matrix is given its address,
as a user with a cluster does. Reported: the wall time of each command, each run's seconds as the driver saw them,
the Ray overhead per run ((Ray wall - local wall) / runs) and the wall-time ratio, and whether both gave the same
test predictions. Targets: overhead <= 10 s per run, Ray wall <= 1.2x local (one 2-core machine cannot be faster).

    python bench/ray/ray.py --name 'five breeds, 4 runs'        # the data of $DOGFT_HOME (dogft-data first)

`--name NAME` writes the report as NAME into results.json and results.md beside this script. (This script never
imports Ray: it is named like the package, and runs `ray` and `dogft-run-all` as commands.)
"""
import argparse, json, os, shutil, socket, subprocess, sys, tempfile, time
from pathlib import Path

import pandas as pd

from dogft.core import dogft_home

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib

TARGETS = dict(overhead_s=10.0, ratio=1.2)
BIN = Path(sys.executable).parent

def matrix(home:Path, args:list, extra:list=())->tuple[float, str]:
    "Run `dogft-run-all args extra` in `home`: its wall seconds and stdout."
    env = {**os.environ, 'DOGFT_HOME': str(home), 'RAY_AUTH_MODE': 'disabled'}
    env.pop('RAY_ADDRESS', None)
    t0 = time.monotonic()
    r = subprocess.run([BIN/'dogft-run-all', *args, *extra], cwd=home, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if r.returncode: raise SystemExit(f"error: dogft-run-all {' '.join(extra)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return wall, r.stdout

def predictions(home:Path)->dict:
    "Each run's test predictions (path, predicted class, probabilities)."
    return {f.name: [(p['path'], p['predicted'], p['probabilities']) for p in json.loads(f.read_text())['test_predictions']]
            for f in sorted((home/'results'/'metrics').glob('*_results.json'))}

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data-dir', default=None, help='prepared data to copy into both homes (default: $DOGFT_HOME/data/processed)')
    p.add_argument('--models', default='efficientnet_lite0'); p.add_argument('--strategies', default='freeze,partial'); p.add_argument('--seeds', default='42,43')
    p.add_argument('--work', default=str(benchlib.work_dir('ray')), help='where the two homes go (emptied first)')
    p.add_argument('--name', default=None, help="the report's name in --results (without it the report is only printed)")
    p.add_argument('--results', default=str(benchlib.results_file(__file__)), help="the study's report file (default: results.json beside this script)")
    a = p.parse_args(argv)
    data = Path(a.data_dir) if a.data_dir else dogft_home()/'data'/'processed'
    if not (data/'split.csv').exists(): raise SystemExit(f"error: no prepared data in {data}: run dogft-data first")
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    homes = {k: work/k for k in ('local', 'ray')}
    for h in homes.values(): shutil.copytree(data, h/'data'/'processed', symlinks=True)
    args = ['--models', a.models, '--strategies', a.strategies, '--seeds', a.seeds, '--skip-followups']
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix='rb')  # short: Ray's socket paths have a length limit
    env = {**os.environ, 'RAY_AUTH_MODE': 'disabled', 'RAY_USAGE_STATS_ENABLED': '0'}
    local_wall, local_out = matrix(homes['local'], args)
    t0 = time.monotonic()
    subprocess.run([BIN/'ray', 'start', '--head', f'--port={port}', '--num-cpus=2', '--node-ip-address=127.0.0.1', '--include-dashboard=false',
                    f'--temp-dir={tmp}', '--disable-usage-stats'], env=env, check=True, capture_output=True)
    start_s = time.monotonic() - t0
    try: ray_wall, ray_out = matrix(homes['ray'], args, ['--ray', f'127.0.0.1:{port}'])
    finally:
        subprocess.run([BIN/'ray', 'stop', '--force'], env=env, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    runs = {k: pd.read_csv(h/'results'/'runs'/'summary.csv') for k,h in homes.items()}
    n = len(runs['local'])
    rows = [dict(run=f"{r.model} {r.strategy} s{r.seed}", local_s=round(r.seconds, 1), ray_s=round(q.seconds, 1))
            for r,q in zip(runs['local'].itertuples(), runs['ray'].itertuples())]
    same = predictions(homes['local']) == predictions(homes['ray'])
    over, ratio = (ray_wall - local_wall)/n, ray_wall/local_wall
    report = dict(command=benchlib.command_line(__file__, argv), data=benchlib.show_path(data), runs=n, rows=rows, local_wall_s=round(local_wall, 1),
                  ray_wall_s=round(ray_wall, 1), ray_start_s=round(start_s, 1), overhead_per_run_s=round(over, 1), ratio=round(ratio, 3),
                  targets=TARGETS, met=dict(overhead=over <= TARGETS['overhead_s'], ratio=ratio <= TARGETS['ratio']), same_predictions=same,
                  ray_line=next((l.replace(str(homes['ray']), '$DOGFT_HOME') for l in ray_out.splitlines() if l.startswith('ray: ')), None), machine=benchlib.machine_info())
    table = '\n'.join(f"| {r['run']} | {r['local_s']:.1f} | {r['ray_s']:.1f} |" for r in rows)
    md = (f"# {a.name or 'ray'}\n\n{n} runs ({a.models} × {a.strategies} × seeds {a.seeds}) on `{report['data']}`; "
          f"the Ray instance (2 CPUs, started before, {start_s:.1f} s to start) and the local command on the same 2-core machine.\n\n"
          f"| run | local s | Ray s |\n|---|---|---|\n{table}\n| **matrix, wall** | **{local_wall:.1f}** | **{ray_wall:.1f}** |\n\n"
          f"Ray overhead per run: **{over:.1f} s** (target ≤ {TARGETS['overhead_s']:g} s: {'met' if over <= TARGETS['overhead_s'] else 'not met'}); "
          f"wall-time ratio **{ratio:.2f}×** (target ≤ {TARGETS['ratio']:g}×: {'met' if ratio <= TARGETS['ratio'] else 'not met'}); "
          f"the same test predictions: {'yes' if same else 'NO'}.\n\n`{report['command']}`\n\n{benchlib.machine_line(report['machine'])}\n")
    print(md)
    if a.name: benchlib.save_report(a.results, a.name, report, md)

if __name__ == '__main__': main()
