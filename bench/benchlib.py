"""What every bench script shares: the machine it ran on, paths shown without machine specifics, work folders,
and the study's report file (`results.json` + `results.md`, one named report each, written atomically).

A script lives in `bench/<study>/` and imports this by path:

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import benchlib

Report file: `bench/<study>/results.json` maps a report's name to its data (at least `command` and the rows the
Studies page renders); `bench/<study>/results.md` holds the same reports as markdown, each after a
`<!-- report: NAME -->` line, in the JSON's order. `save_report` replaces a report of the same name in both and
keeps the others.
"""
from __future__ import annotations
import json, os, platform, re, shlex, subprocess, sys, tempfile
from pathlib import Path

from dogft.core import atomic_write, dogft_home, save_json

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
_MARK = re.compile(r'^<!-- report: (.+?) -->[ \t]*$', re.M)


# ---------------------------------------------------------------------------------------------------------------
# where things are
def study_dir(script:str|Path)->Path:
    "The study folder of a bench script (`bench/<study>/`)."
    return Path(script).resolve().parent


def results_file(script:str|Path)->Path:
    "The report file of a bench script's study: `bench/<study>/results.json`."
    return study_dir(script)/'results.json'


def work_dir(study:str, *parts:str)->Path:
    "A folder for a study's runs that survives between invocations (finished runs are reused): `{tempdir}/dogft-bench/{study}/...`."
    return Path(tempfile.gettempdir(), 'dogft-bench', study, *parts)


def show_path(p)->str:
    "`p` as a report shows it: under `$DOGFT_HOME`, this checkout, the home folder or the temp folder, named from there."
    p = Path(p).expanduser().resolve()
    for base,name in ((Path(os.environ['DOGFT_HOME']) if os.environ.get('DOGFT_HOME') else None, '$DOGFT_HOME'), (ROOT, '.'),
                      (Path(tempfile.gettempdir()), '$TMPDIR'), (Path.home(), '~')):
        if base is None: continue
        try: rel = p.relative_to(base.expanduser().resolve())
        except ValueError: continue
        return name if rel == Path('.') else (str(rel) if name == '.' else f'{name}/{rel}')
    return p.name


def command_line(script:str|Path, argv:list[str]|None=None)->str:
    "The command that ran `script` with `argv` (default `sys.argv[1:]`), as typed from the checkout's root, with paths shown by `show_path`."
    args = [show_path(a) if os.path.isabs(a) else a for a in (sys.argv[1:] if argv is None else argv)]
    try: rel = Path(script).resolve().relative_to(ROOT)
    except ValueError: rel = Path(script).name
    return shlex.join(['python', str(rel), *args])


# ---------------------------------------------------------------------------------------------------------------
# the machine
def git_commit()->str|None:
    "The checkout's short commit, `+` when `dogft/` or `bench/` has uncommitted changes; None outside git."
    run = lambda *a: subprocess.run(['git', *a], capture_output=True, text=True, cwd=ROOT)
    try: r = run('rev-parse', '--short', 'HEAD')
    except OSError: return None
    if r.returncode: return None
    dirty = run('status', '--porcelain', '--', 'dogft', 'bench').stdout.strip()
    return r.stdout.strip() + ('+' if dirty else '')


def cpu_name()->str:
    "The CPU's model name (`/proc/cpuinfo` where there is one)."
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def versions(*names:str)->dict:
    "Versions of `names` (default: dogft and the libraries timings depend on) that are installed."
    from importlib import metadata
    out = {}
    for n in names or ('dogft', 'torch', 'torchvision', 'timm', 'fastai', 'onnxruntime', 'onnx', 'numpy'):
        try: out[n] = metadata.version(n)
        except metadata.PackageNotFoundError: pass
    return out


def machine_info(**extra)->dict:
    "What a measurement depends on: CPU, cores, torch threads (when torch is loaded), Python, platform, library versions, git commit, load average."
    torch = sys.modules.get('torch')
    info = dict(cpu=cpu_name(), cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads() if torch else None,
                python=platform.python_version(), platform=platform.platform(), versions=versions(), git=git_commit())
    if hasattr(os, 'getloadavg'): info['load_avg'] = [round(x, 2) for x in os.getloadavg()]
    return info | extra


def machine_line(info:dict)->str:
    "One sentence for a report: the machine and software of `machine_info`."
    v = info.get('versions', {})
    sw = ', '.join(f'{k} {v[k]}' for k in ('torch', 'timm', 'fastai', 'onnxruntime', 'dogft') if k in v)
    threads = f", torch threads {info['torch_threads']}" if info.get('torch_threads') else ''
    return f"Machine: {info['cpu']}, {info['cpu_count']} CPUs{threads}; Python {info['python']}, {sw} (git {info.get('git')})."


# ---------------------------------------------------------------------------------------------------------------
# reports
def load_reports(path:str|Path)->dict:
    "All reports of a report file (`{name: data}`), empty when there is none yet."
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {}


def load_report(path:str|Path, name:str|None=None)->dict:
    "One report of a report file: `name`, or the only one."
    reports = load_reports(path)
    if name is None and len(reports) == 1: return next(iter(reports.values()))
    if name not in reports: raise SystemExit(f"error: {path} has no report {name!r} (it has: {', '.join(map(repr, reports)) or 'none'})")
    return reports[name]


def md_sections(md:str)->dict:
    "The reports of a `results.md`: `{name: markdown}`."
    parts = _MARK.split(md)
    return {parts[i]: parts[i + 1].strip('\n') for i in range(1, len(parts) - 1, 2)}


def save_report(path:str|Path, # the study's `results.json` (its `results.md` is beside it)
                name:str, # the report's name, e.g. `nested, seven breeds`
                data:dict, # JSON-able: at least `command`
                md:str # the report as markdown
               )->Path:
    "Add or replace report `name` in `path` and in the markdown beside it, atomically; the other reports stay as they are."
    path = Path(path)
    reports = load_reports(path)
    reports[name] = data
    mdp = path.with_suffix('.md')
    sections = md_sections(mdp.read_text()) if mdp.exists() else {}
    sections[name] = md.strip('\n')
    save_json(reports, path)
    atomic_write(mdp, lambda p: Path(p).write_text(
        '\n\n'.join(f'<!-- report: {n} -->\n{sections[n]}' for n in reports if n in sections) + '\n'))
    return path
