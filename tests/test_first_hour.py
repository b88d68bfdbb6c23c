"A new user's first hour (issue 25), checked without training: the clone ships nothing where the commands write, git ignores what they write, and the docs' commands use only options the commands have."
import json, re, shutil, subprocess, sys
from functools import cache
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MAIN_JOB = 'dogft-run-all --models efficientnet_lite0 --strategies freeze,partial,full'
SCRIPTS = set(re.findall(r'^(dogft-[a-z-]+) =', (ROOT/'pyproject.toml').read_text().split('[project.scripts]')[1].split('\n[')[0], re.M))
needs_git = pytest.mark.skipif(shutil.which('git') is None or not (ROOT/'.git').exists(), reason='not a git checkout')

def git(*args:str, stdin:str|None=None)->subprocess.CompletedProcess:
    "Run git in the checkout, text in and out."
    return subprocess.run(['git', *args], cwd=ROOT, input=stdin, capture_output=True, text=True)

def ignored(*paths:str)->set[str]:
    "Which of `paths` (relative to the checkout, existing or not) git ignores."
    return set(git('check-ignore', '--no-index', '--stdin', stdin='\n'.join(paths)).stdout.split())

@needs_git
def test_clone_ships_no_outputs():
    "Nothing is tracked under the default home's `data/`, `results/` or `models/`: in a fresh clone the first command trains."
    where = ['--', 'data', 'results', 'models']
    tracked = set(git('ls-files', *where).stdout.split()) - set(git('ls-files', '--deleted', *where).stdout.split())
    assert not tracked, f"a clone would ship outputs where the commands write: {sorted(tracked)[:5]}"

@needs_git
def test_outputs_ignored_shipped_results_kept():
    "What a run writes is ignored wherever its home is; shipped results are not, but weights and data never ship."
    runs = ['results/metrics/x_s42_results.json', 'results/comparison.md', 'results/tensorboard/x_s42/events', 'results/runs/x.ipynb',
            'data/processed/split.csv', 'models/x_s42_best.pth', 'nbs/results/metrics/x_s42_results.json']
    shipped = ['examples/five_breeds/results/metrics/x_s42_results.json', 'examples/five_breeds/results/comparison.csv',
               'examples/screenshots/home.png', 'bench/seven_breeds/results/plots/x.png', 'bench/recipe_cv/results.json']
    never = ['examples/five_breeds/models/best_model_x.onnx', 'examples/five_breeds/data/processed/split.csv', 'examples/five_breeds/results/x.pth',
             'bench/seven_breeds/results/runs/x.ipynb', 'bench/seven_breeds/models/x.safetensors', 'examples/five_breeds/results/tensorboard/x/e']
    assert ignored(*runs, *never) == set(runs + never)
    assert not ignored(*shipped)
    outputs = {'__pycache__', 'data', 'models'}  # a study home's own outputs on this machine (`DOGFT_HOME=bench/seven_breeds dogft-data`)
    files = [p for d in ('examples', 'bench') for p in (ROOT/d).rglob('*') if p.is_file() and not outputs & set(p.relative_to(ROOT).parts)]
    assert not ignored(*(str(p.relative_to(ROOT)) for p in files)), "a shipped file is git-ignored"

def _section(md:str, title:str)->str:
    "The text of the `## title` section of `md`."
    return md.split(f'\n## {title}\n')[1].split('\n## ')[0]

def test_readme_runs_the_main_job_first():
    "The README's Run section, right after the set-up, opens with the one command for the whole job, and says what a new user needs."
    readme = (ROOT/'README.md').read_text()
    assert readme.index('\n## Set up\n') < readme.index('\n## Run\n')
    run = _section(readme, 'Run')
    first = re.search(r'```sh\n(.*?)\n```', run, re.S).group(1).strip()
    assert first == f'.venv/bin/{MAIN_JOB}', f"the Run section's first command is {first!r}"
    for said in ('--source', 'DOGFT_SOURCE', '--force', '--no-resume', '--tensorboard', 'results/tensorboard/<run>/',
                 'tensorboard --logdir results/tensorboard', '--weights none', 'cannot learn'):
        assert said in run, f"the Run section does not mention {said}"
    assert 'export DOGFT_HOME' not in readme, "a clone is a home of its own: no folder of their own needed"

def _code_blocks(md:str)->list[str]:
    "The shell code blocks of a markdown text."
    return re.findall(r'```(?:sh|bash)\n(.*?)```', md, re.S)

def _docs_commands()->list[tuple[str, str, str]]:
    "(where, command, option) for every `--option` of a dogft command in the user docs' shell blocks."
    docs = {'README.md': (ROOT/'README.md').read_text()} | {str(p.relative_to(ROOT)): p.read_text() for p in sorted(ROOT.glob('bench/*/README.md'))}
    tut = json.loads((ROOT/'nbs'/'tutorial.ipynb').read_text())
    docs['nbs/tutorial.ipynb'] = '\n'.join(''.join(c['source']) for c in tut['cells'] if c['cell_type'] == 'markdown')
    found = []
    for where,md in docs.items():
        for block in _code_blocks(md):
            for line in block.replace('\\\n', ' ').splitlines():
                words = line.split('#')[0].split()
                cmd = next((i for i,w in enumerate(words) if w.rsplit('/', 1)[-1] in SCRIPTS), None)
                if cmd is None: continue
                name = words[cmd].rsplit('/', 1)[-1]
                found += [(where, name, w.split('=')[0]) for w in words[cmd+1:] if w.startswith('--')]
    return found

@cache
def _options(cmd:str)->set[str]:
    "The options that `cmd --help` lists."
    r = subprocess.run([BIN/cmd, '--help'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{cmd} --help failed: {r.stderr[-1000:]}"
    return set(re.findall(r'--[a-z][a-z0-9-]*', r.stdout))

def test_docs_commands_use_real_options():
    "Every option in the README's, the bench READMEs' and the tutorial's commands is one the command has."
    used = _docs_commands()
    assert ('README.md', 'dogft-run-all', '--strategies') in used and any(w.startswith('bench/') for w,_,_ in used)
    wrong = sorted({f"{where}: {cmd} {opt}" for where,cmd,opt in used if opt not in _options(cmd)})
    assert not wrong, 'options the commands do not have:\n' + '\n'.join(wrong)
