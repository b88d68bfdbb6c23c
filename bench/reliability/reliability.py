"""Replay hostile inputs and faults against the dogft commands, as a user would meet them, and record what the user sees.

Each case runs the real console scripts in subprocesses, in a fresh `DOGFT_HOME` under the work folder, and checks
that nothing was lost or left behind (temporary folders, half-written files, files outside the home). The report
is the reliability table of the docs (`nbs/reliability.ipynb`).

    python bench/reliability/reliability.py --name 'three breeds'      # ~10 min on 2 CPU cores
"""
from __future__ import annotations
import argparse, json, os, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib

BIN = Path(sys.executable).parent
BREEDS = 'beagle,boxer,toy_poodle'
QUICK = ['--img-size', '128', '--batch-size', '16']  # small inputs: the cases are about messages and files, not accuracy


def sh(*args, home:Path, timeout:float=600, env:dict|None=None, tmpdir:Path|None=None)->subprocess.CompletedProcess:
    "Run a dogft command (or any program) in `home` as a user would; stdout and stderr captured."
    e = dict(os.environ, DOGFT_HOME=str(home), PYTHONWARNINGS='ignore', **(env or {}))
    if tmpdir is not None: e['TMPDIR'] = str(tmpdir)
    cmd = [str(BIN/args[0]) if (BIN/args[0]).exists() else args[0], *map(str, args[1:])]
    try: return subprocess.run(cmd, cwd=home, env=e, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as t:
        return subprocess.CompletedProcess(cmd, 'timeout', t.stdout or '', (t.stderr or '') + f'\n(killed by the replay after {timeout} s)')


WORK = None  # the work folder, shown as `$WORK` in the report

def said(p, *keys:str, n:int=3)->str:
    "The lines of a command's output a user reads for this case: its error line, else the lines naming one of `keys`."
    text = p.stdout + '\n' + p.stderr
    if WORK is not None: text = text.replace(str(WORK), '$WORK')
    out = [l.strip() for l in text.splitlines() if l.strip()]
    err = [l for l in out if ': error:' in l]
    hits = err or [l for l in out if any(k in l for k in keys)]
    return ' / '.join(hits[:n]) if hits else (out[-1] if out else '(nothing)')


def leftovers(home:Path, tmpdir:Path|None=None)->list[str]:
    "Temporary or half-written files under `home` (and anything in a private `tmpdir`): what a fault must not leave."
    bad = [str(p.relative_to(home)) for p in home.rglob('*') if '.tmp' in p.name or p.name.endswith('.partial.ipynb')]
    if tmpdir is not None: bad += [f'$TMPDIR/{p.name}' for p in tmpdir.iterdir()]
    return sorted(bad)


def source_folder(work:Path)->Path:
    "A folder of breed folders: real Stanford Dogs crops when `../shared` has them, else synthetic images."
    from dogft.data import shared_stanford_dogs
    from dogft.testing import make_fake_stanford
    src = work/'source'
    if src.exists(): return src
    shared = shared_stanford_dogs()
    if shared is not None:
        for b in BREEDS.split(','): shutil.copytree(shared/b, src/b)
    else: make_fake_stanford(src, breeds=BREEDS.split(','), n=40, layout='name', size=(160, 140))
    return src


def new_home(work:Path, name:str, src:Path|None=None)->Path:
    "An empty `DOGFT_HOME` for one case, with the data prepared from `src` when given."
    home = work/name
    shutil.rmtree(home, ignore_errors=True); home.mkdir(parents=True)
    if src is not None: sh('dogft-data', '--source', src, '--breeds', BREEDS, home=home, timeout=300).check_returncode()
    return home


def row(item:int, case:str, did:str, p, sees:str, kept:str, ok:bool)->dict:
    "One line of the table."
    status = p.returncode if hasattr(p, 'returncode') else p
    return dict(item=item, case=case, did=did, status=status, sees=sees, kept=kept, ok=bool(ok))


# ---------------------------------------------------------------------------------------------------------------
# the cases (numbers are the items)
def hostile_folder(work:Path, src:Path)->list[dict]:
    "1. A breed folder holding a symlink to /dev/zero, a FIFO, a symlink to a system file, a hidden file and a 60 MB file."
    bad = work/'hostile-source'
    shutil.rmtree(bad, ignore_errors=True); shutil.copytree(src, bad)
    d = bad/BREEDS.split(',')[0]
    (d/'zero.jpg').symlink_to('/dev/zero'); os.mkfifo(d/'pipe.jpg'); (d/'passwd.jpg').symlink_to('/etc/passwd')
    (d/'.DS_Store').write_bytes(b'\0' * 64)
    with open(d/'huge.jpg', 'wb') as f: f.truncate(60 * 2**20)  # sparse: 60 MB that cost nothing on disk
    home = new_home(work, 'hostile-folder')
    t = time.time(); p = sh('dogft-data', '--source', bad, '--breeds', BREEDS, home=home, timeout=120); dt = time.time() - t
    csv = home/'data/processed/bad_files.csv'
    import pandas as pd
    listed = pd.read_csv(csv) if csv.exists() else pd.DataFrame(columns=['source', 'reason'])
    names = {n: next((r for s,r in zip(listed.source, listed.reason) if str(s).endswith(n)), None)
             for n in ('zero.jpg', 'pipe.jpg', 'passwd.jpg', '.DS_Store', 'huge.jpg')}
    kept = f"finished in {dt:.0f} s; bad_files.csv: " + '; '.join(f'{n}: {r or "NOT LISTED"}' for n,r in names.items())
    left = leftovers(home)
    return [row(1, 'breed folder with a symlink to /dev/zero, a FIFO, a symlink to /etc/passwd, a hidden file, a 60 MB file',
                'dogft-data --source FOLDER', p, said(p, 'skipped', n=2), kept + (f'; left behind: {left}' if left else '; nothing left behind'),
                p.returncode == 0 and all(names.values()) and not left)]


def bad_files_stable(work:Path, src:Path)->list[dict]:
    "6. `bad_files.csv` is the same from one build to the next (no memory addresses)."
    bad = work/'corrupt-source'
    shutil.rmtree(bad, ignore_errors=True); shutil.copytree(src, bad)
    (bad/BREEDS.split(',')[0]/'truncated.jpg').write_bytes((src/BREEDS.split(',')[0]).glob('*.jpg').__next__().read_bytes()[:300])
    (bad/BREEDS.split(',')[0]/'notes.jpg').write_text('not an image')
    csvs = []
    for i in range(2):
        home = new_home(work, f'bad-files-{i}')
        p = sh('dogft-data', '--source', bad, '--breeds', BREEDS, home=home, timeout=300)
        csvs.append((home/'data/processed/bad_files.csv').read_text())
    same = csvs[0] == csvs[1] and '0x' not in csvs[0]
    return [row(6, 'bad_files.csv of two builds of the same folder', 'dogft-data twice, files compared', p,
                said(p, 'skipped', n=1), 'identical, no memory addresses' if same else 'DIFFERENT: ' + csvs[0][:200], same)]


def too_few_images(work:Path, src:Path)->list[dict]:
    "5. A breed with two images cannot fill a 70/15/15 split."
    few = work/'few-source'
    shutil.rmtree(few, ignore_errors=True); shutil.copytree(src, few)
    b = BREEDS.split(',')[-1]
    for f in sorted((few/b).iterdir())[2:]: f.unlink()
    home = new_home(work, 'too-few')
    p = sh('dogft-data', '--source', few, '--breeds', BREEDS, home=home, timeout=300)
    left = leftovers(home) + [str(x.relative_to(home)) for x in home.rglob('split.csv')]
    return [row(5, f'a breed with 2 images ({b})', 'dogft-data --source FOLDER', p, said(p), 'no data folder written' if not left else f'wrote {left}',
                p.returncode not in (0, 'timeout') and not left)]


def truncated_split(work:Path, home:Path)->list[dict]:
    "5. A `split.csv` cut short after it was written."
    csv = home/'data/processed/split.csv'
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text(''.join(lines[:len(lines)//2]))
    p1 = sh('dogft-train', '--breeds', BREEDS, *QUICK, '--epochs', '1', home=home, timeout=600)
    p2 = sh('dogft-data', '--source', source_folder(home.parent), '--breeds', BREEDS, home=home, timeout=300)
    n = len(csv.read_text().splitlines())
    return [row(5, 'split.csv truncated to half its rows', 'dogft-train, then dogft-data', p1, said(p1), 'not trained on' if p1.returncode else 'TRAINED ON IT', p1.returncode != 0),
            row(5, 'split.csv truncated to half its rows', 'dogft-data (same source)', p2, said(p2, 'rebuild', 'stamp', 'match', n=1),
                f'split.csv has {n} lines again (was {len(lines)})', n == len(lines))]


def read_only_home(work:Path, src:Path)->list[dict]:
    "5. Every command on a home the user cannot write (a read-only mount, or folders without write permission), holding data, a run and a model."
    full = work/'predict'  # the home of `predict_hostile_home`: data, a trained run, an exported model
    if not (full/'models').exists(): predict_hostile_home(work, src)
    ro = work/'read-only'
    if os.path.ismount(ro): subprocess.run(['umount', str(ro)])
    shutil.rmtree(ro, ignore_errors=True); ro.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=512m', 'tmpfs', str(ro)], capture_output=True).returncode == 0
    shutil.copytree(full, ro, dirs_exist_ok=True)
    if mounted: subprocess.run(['mount', '-o', 'remount,ro', str(ro)], check=True)
    else: subprocess.run(['chmod', '-R', 'a-w', str(ro)], check=True)
    rows = []
    try:
        for cmd in (['dogft-data', '--source', src, '--breeds', BREEDS, '--force'], ['dogft-train', '--breeds', BREEDS, *QUICK, '--seed', '3'],
                    ['dogft-analyze'], ['dogft-export', '--quantize', 'int8'],
                    ['dogft-run-all', '--models', 'efficientnet_lite0', '--strategies', 'freeze', '--seeds', '3', '--breeds', BREEDS, *QUICK]):
            p = sh(*cmd, home=ro, timeout=600)
            rows.append(row(5, f"read-only DOGFT_HOME with data, a run and a model ({'read-only mount' if mounted else 'no write permission'})",
                            ' '.join(map(str, cmd[:1] + [c for c in cmd[1:] if str(c).startswith('--') and c not in QUICK])), p, said(p),
                            'nothing changed', p.returncode not in (0, 'timeout') and 'Traceback' not in p.stderr))
    finally:
        if mounted: subprocess.run(['umount', str(ro)])
        else: subprocess.run(['chmod', '-R', 'u+w', str(ro)])
    return rows


def train_lines(home:Path, *args, tmpdir=None):
    "Start `dogft-train` in `home`; the process, its output read line by line."
    e = dict(os.environ, DOGFT_HOME=str(home), PYTHONWARNINGS='ignore', PYTHONUNBUFFERED='1')
    if tmpdir: e['TMPDIR'] = str(tmpdir)
    return subprocess.Popen([str(BIN/'dogft-train'), '--breeds', BREEDS, *QUICK, *map(str, args)], cwd=home, env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(proc, text:str, timeout:float=600)->list[str]:
    "Read `proc`'s lines until one contains `text`; the lines read."
    lines, t = [], time.time()
    for l in proc.stdout:
        lines.append(l.rstrip())
        if text in l or time.time() - t > timeout: break
    return lines


def concurrent_runs(work:Path, home:Path)->list[dict]:
    "2. Two processes train the same run in one home at once."
    a = train_lines(home, '--strategy', 'partial', '--epochs', '4', '--seed', '7')
    wait_for(a, 'epoch')
    b = sh('dogft-train', '--breeds', BREEDS, *QUICK, '--strategy', 'partial', '--epochs', '4', '--seed', '7', home=home, timeout=600)
    a.stdout.read(); a.wait()
    m = json.loads(next((home/'results/metrics').glob('*partial_s7_results.json')).read_text())
    return [row(2, 'a second dogft-train of the same run while the first trains', 'dogft-train twice at once', b, said(b),
                f"first run finished (status {a.returncode}), best epoch {m['best_epoch']}, test accuracy {m['test_acc']:.3f}",
                b.returncode not in (0, 'timeout') and 'pid' in b.stderr and a.returncode == 0)]


def killed_and_corrupt(work:Path, home:Path)->list[dict]:
    "7 and 3. kill -9 during training, then resume, against an uninterrupted run; the newest checkpoint damaged; a damaged best checkpoint exported."
    rows, args = [], ('--strategy', 'freeze', '--epochs', '7', '--seed', '11')
    def again(): return sh('dogft-train', '--breeds', BREEDS, *QUICK, *args, home=home, timeout=900)
    def history(): return json.loads(next((home/'results/metrics').glob('*freeze_s11_results.json')).read_text())
    def start_over(): shutil.rmtree(home/'models', ignore_errors=True); shutil.rmtree(home/'results', ignore_errors=True)
    def kill_after(epoch):
        a = train_lines(home, *args); wait_for(a, f'epoch {epoch}/'); os.kill(a.pid, signal.SIGKILL); a.wait()
    again().check_returncode(); ref = history()
    diff = lambda m: max(abs(x['train_loss'] - y['train_loss']) + abs(x['val_loss'] - y['val_loss']) for x,y in zip(ref['history'], m['history']))
    start_over(); kill_after(3); p = again(); m = history()
    rows.append(row(7, 'kill -9 after epoch 3 of 7, then the same command', 'dogft-train; killed; dogft-train', p, said(p, 'resum', n=1),
                    f"train and val losses vs an uninterrupted run: max |Δ| {diff(m):.2g}; test accuracy {m['test_acc']:.3f} vs {ref['test_acc']:.3f}",
                    p.returncode == 0 and diff(m) < 1e-6))
    start_over(); kill_after(6)  # last.pth holds epoch 6, epoch_005.pth the copy of epoch 5
    last = next(home.rglob('last.pth')); last.write_bytes(last.read_bytes()[:1000])
    p = again(); m = history()
    rows.append(row(3, 'kill -9 after epoch 6 of 7, then its last.pth cut to 1 kB', 'dogft-train (resuming)', p, said(p, 'damaged', 'resum', n=2),
                    f"finished from the intact copy; losses vs the uninterrupted run: max |Δ| {diff(m):.2g}", p.returncode == 0 and diff(m) < 1e-6))
    best = next((home/'models').glob('*freeze_s11_best.pth'))
    best.write_bytes(best.read_bytes()[:1000])
    p = sh('dogft-export', '--run', best.name.removesuffix('_best.pth'), home=home, timeout=600)
    onnx = list((home/'models').glob('*.onnx'))
    rows.append(row(3, f'{best.name} cut to 1 kB', 'dogft-export --run RUN', p, said(p), 'no model file written' if not onnx else f'WROTE {onnx}',
                    p.returncode not in (0, 'timeout') and 'Traceback' not in p.stderr and not onnx))
    return rows


def run_all_outside(work:Path, home:Path)->list[dict]:
    "4. `dogft-run-all` writes nothing outside its home, and a killed run's partial notebook goes when the run is retried."
    tmpdir = work/'private-tmp'
    shutil.rmtree(tmpdir, ignore_errors=True); tmpdir.mkdir()
    args = ['dogft-run-all', '--models', 'efficientnet_lite0', '--strategies', 'freeze', '--seeds', '5', '--breeds', BREEDS, *QUICK, '--epochs', '2', '--skip-followups']
    e = dict(os.environ, DOGFT_HOME=str(home), TMPDIR=str(tmpdir), PYTHONWARNINGS='ignore', PYTHONUNBUFFERED='1')
    a = subprocess.Popen([str(BIN/args[0]), *args[1:]], cwd=home, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    wait_for(a, 'epoch 1'); os.killpg(a.pid, signal.SIGKILL); a.wait()
    partial = [p.name for p in (home/'results/runs').glob('*.partial.ipynb')]
    after_kill = {x.name for x in tmpdir.iterdir()}  # what the killed processes could not remove
    p = sh(*args, home=home, tmpdir=tmpdir, timeout=900)
    new = sorted({x.name for x in tmpdir.iterdir()} - after_kill)
    killed = ', '.join(sorted('an empty torchinductor folder (torch makes it at import)' if n.startswith('torchinductor_') else
                              f'{n} (the killed kernel\'s connection file)' if n.endswith('.json') else n for n in after_kill)) or 'nothing'
    left = leftovers(home)
    return [row(4, 'dogft-run-all killed mid-run (kill -9 of its process group), then run again, TMPDIR private', 'dogft-run-all, killed; dogft-run-all', p,
                said(p, 'finished', 'done', n=1), f"after the kill: {partial or 'no partial notebook'} in results/runs, in TMPDIR {killed}; after the retry: "
                f"{'no temporary file in the home' if not left else left}, {'nothing new' if not new else new} in TMPDIR", p.returncode == 0 and not left and not new)]


def export_names(work:Path, home:Path)->list[dict]:
    "6. Exporting a named run does not silently replace the model another run wrote."
    runs = sorted(p.name.removesuffix('_results.json') for p in (home/'results/metrics').glob('*_results.json'))
    ps = [sh('dogft-export', '--run', r, home=home, timeout=600) for r in runs[:2]]
    files = sorted(p.name for p in (home/'models').glob('*.onnx'))
    return [row(6, f'dogft-export --run for two runs of one model ({", ".join(runs[:2])})', 'dogft-export --run A; --run B', ps[-1],
                said(ps[-1], '.onnx', 'replac', n=2), f'model files: {", ".join(files)}', all(p.returncode == 0 for p in ps) and len(files) >= 2)]


def predict_hostile(work:Path, home:Path)->list[dict]:
    "1. `dogft-predict` given a FIFO, /dev/zero and a folder between two good photos."
    imgs = sorted((home/'data/processed/test').rglob('*.jpg'))[:2]
    fifo = work/'photo-pipe.jpg'
    if not fifo.exists(): os.mkfifo(fifo)
    p = sh('dogft-predict', '--json', imgs[0], fifo, '/dev/zero', work, imgs[1], home=home, timeout=120)
    out = [json.loads(l) for l in p.stdout.splitlines() if l.startswith('{')]
    good = sum('top' in r for r in out); errors = [r.get('error', '') for r in out if 'error' in r]
    return [row(1, 'dogft-predict on a good photo, a FIFO, /dev/zero, a folder, a good photo', 'dogft-predict --json ...', p,
                ' / '.join(errors[:3]) or said(p), f'{good} of 2 good photos classified, {len(errors)} errors reported',
                p.returncode != 'timeout' and good == 2 and len(errors) == 3)]


def markdown(rows:list[dict], info:dict, command:str)->str:
    "The report as a markdown table."
    head = ['| item | hostile input or fault | what was run | exit | what the user sees | what was kept or checked | holds |', '|---|---|---|---|---|---|---|']
    esc = lambda s: str(s).replace('|', '\\|').replace('\n', ' ')
    body = [f"| {r['item']} | {esc(r['case'])} | `{esc(r['did'])}` | {r['status']} | {esc(r['sees'])} | {esc(r['kept'])} | {'yes' if r['ok'] else '**no**'} |" for r in rows]
    return '\n'.join([f'`{command}`', '', benchlib.machine_line(info), '', *head, *body])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--work-dir', type=Path, default=benchlib.work_dir('reliability'))
    ap.add_argument('--name', help='save the report under this name in results.json/results.md')
    ap.add_argument('--only', help='comma-separated case functions to run (default: all)')
    a = ap.parse_args(argv)
    global WORK
    work = WORK = a.work_dir.absolute(); work.mkdir(parents=True, exist_ok=True)
    src = source_folder(work)
    cases = [hostile_folder, bad_files_stable, too_few_images, predict_hostile_home, read_only_home, concurrent_runs_home,
             killed_and_corrupt_home, run_all_outside_home, truncated_split_home, export_names_home]
    if a.only: cases = [c for c in cases if c.__name__.removesuffix('_home') in a.only.split(',') or c.__name__ in a.only.split(',')]
    rows = []
    for case in cases:
        t = time.time()
        try: got = case(work, src)
        except Exception as e: got = [row(0, case.__name__, '', 'replay failed', f'{type(e).__name__}: {e}', '', False)]
        rows += got
        for r in got: print(f"{'ok ' if r['ok'] else 'NO '} {r['item']} {r['case']} [{time.time() - t:.0f} s]\n     {r['sees']}\n     {r['kept']}", flush=True)
    info = benchlib.machine_info()
    command = benchlib.command_line(__file__, argv)
    md = markdown(rows, info, command)
    if a.name: benchlib.save_report(benchlib.results_file(__file__), a.name, dict(command=command, machine=info, rows=rows), md)
    else: print(md)


# cases that need a home with prepared data (and, for some, a trained run): each gets its own
def _trained_home(work:Path, src:Path, name:str)->Path:
    home = new_home(work, name, src)
    sh('dogft-train', '--breeds', BREEDS, *QUICK, '--strategy', 'freeze', '--epochs', '2', home=home, timeout=900).check_returncode()
    return home

def predict_hostile_home(work, src):
    home = _trained_home(work, src, 'predict')
    sh('dogft-export', home=home, timeout=600).check_returncode()
    return predict_hostile(work, home)
def concurrent_runs_home(work, src): return concurrent_runs(work, new_home(work, 'concurrent', src))
def killed_and_corrupt_home(work, src):
    home = new_home(work, 'killed', src)
    return killed_and_corrupt(work, home)
def run_all_outside_home(work, src): return run_all_outside(work, new_home(work, 'run-all', src))
def truncated_split_home(work, src): return truncated_split(work, new_home(work, 'truncated-split', src))
def export_names_home(work, src):
    home = new_home(work, 'export-names', src)
    for seed in (1, 2): sh('dogft-train', '--breeds', BREEDS, *QUICK, '--strategy', 'freeze', '--epochs', '2', '--seed', seed, home=home, timeout=900).check_returncode()
    return export_names(work, home)


if __name__ == '__main__': main()
