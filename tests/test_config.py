"One declaration of a run's settings: `TrainConfig`'s fields are the options of `dogft-train` and `dogft-run-all` and the train notebook's parameters."
import json, os, subprocess, sys, textwrap, tomllib
from pathlib import Path

from dogft.config import SET_ONLY, TrainConfig, params_cell

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _parameters_cell(nb_path):
    cells = [c for c in json.loads(Path(nb_path).read_text())['cells'] if 'parameters' in c['metadata'].get('tags', [])]
    assert len(cells) == 1, f'{nb_path} needs exactly one cell tagged `parameters`'
    return ''.join(cells[0]['source'])


def test_train_notebook_parameters_are_the_config():
    "The train notebook's papermill `parameters` cell is `params_cell()`: a field added to `TrainConfig` without it fails here."
    assert _parameters_cell(ROOT/'nbs'/'03_train.ipynb') == params_cell(), \
        "paste the output of `python -c 'from dogft.config import params_cell; print(params_cell())'` into the parameters cell of nbs/03_train.ipynb"


def test_a_new_field_reaches_both_commands_and_the_notebook_cell(tmp_path):
    "A `TrainConfig` with one more field: both commands take it as an option (with its help text), `--set` takes it, the notebook cell has it."
    (tmp_path/'wider.py').write_text(textwrap.dedent('''
        from dataclasses import dataclass
        import dogft.config
        @dataclass
        class Wider(dogft.config.TrainConfig):
            mixup:float|None=None # alpha of mixup, 0 for none
        dogft.config.TrainConfig = Wider  # as if the field were TrainConfig's own: the commands are made from it on import
        '''))
    (tmp_path/'show.py').write_text(textwrap.dedent('''
        import json, sys
        import wider
        import dogft.run_all, dogft.train
        from fastcore.script import anno_parser
        from dogft.config import cli_settings, params_cell
        out = {}
        for name, f in (('train', dogft.run_all.dogft_train), ('run_all', dogft.run_all.dogft_run_all)):
            p = anno_parser(f.__wrapped__)
            out[name] = dict(help=p.format_help(), parsed=cli_settings(
                {k: v for k, v in vars(p.parse_args(['--mixup', '0.3', '--set', 'ema=0.5'])).items() if k not in ('pdb', 'xtra', 'lr_find',
                 'models', 'strategies', 'seeds', 'source', 'force', 'notebook', 'skip_followups',
                 'ray', 'gpus_per_run', 'cpus_per_run', 'ray_storage', 'fail_fast')}, wider.Wider))  # the matrix's own options
        out['cell'] = params_cell(wider.Wider)
        out['set'] = cli_settings(dict(set=['mixup=0.2']), wider.Wider)
        print(json.dumps(out))
        '''))
    r = subprocess.run([sys.executable, 'show.py'], cwd=tmp_path, capture_output=True, text=True, env={**os.environ, 'COLUMNS': '200'})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for name in ('train', 'run_all'):
        assert '--mixup (float)' in out[name]['help'] and 'alpha of mixup, 0 for none' in out[name]['help'], out[name]['help']
        assert out[name]['parsed']['mixup'] == 0.3 and out[name]['parsed']['ema'] == 0.5
    assert out['cell'].splitlines()[-1] == 'mixup = None  # alpha of mixup, 0 for none'
    assert out['set'] == dict(mixup=0.2)


def _help(cmd):
    r = subprocess.run([str(BIN/cmd), '--help'], capture_output=True, text=True, env={**os.environ, 'COLUMNS': '200'})
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_help_shows_the_guide_options_and_set():
    "`--help` of both commands: the options a user of the guide needs, the rejected experiments only as `--set` keys."
    guide = ['--epochs', '--lr', '--batch-size', '--img-size', '--weights', '--device', '--breeds', '--data-dir', '--out-dir',
             '--no-resume', '--tensorboard', '--recipe', '--no-warm-start', '--no-cache-features', '--set KEY=VALUE']
    for cmd, own in (('dogft-train', ['--model', '--strategy', '--seed', '--lr-find']),
                     ('dogft-run-all', ['--models', '--strategies', '--seeds', '--source', '--force', '--notebook', '--skip-followups'])):
        h = _help(cmd)
        for o in guide + own: assert f'{o} ' in h or h.rstrip().endswith(o), (cmd, o)
        for k in SET_ONLY: assert f"--{k.replace('_', '-')} " not in h and k in h, (cmd, k)  # a `--set` key, named in its help
    h = _help('dogft-train')
    assert h.index('--model ') < h.index('--epochs ') < h.index('--device ') < h.index('--set ')  # the guide's order


def test_help_imports_neither_torch_nor_papermill(tmp_path):
    "`import dogft.run_all`, and `--help` of `dogft-train` and `dogft-run-all` as their console scripts run it, load neither torch nor papermill."
    r = subprocess.run([sys.executable, '-c', "import dogft.run_all, sys; print('torch' in sys.modules, 'papermill' in sys.modules)"], capture_output=True, text=True)
    assert r.stdout.strip() == 'False False', r.stderr
    scripts = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['scripts']
    for cmd in ('dogft-train', 'dogft-run-all'):
        mod, func = scripts[cmd].split(':')
        (tmp_path/'help.py').write_text(textwrap.dedent(f"""
            import sys
            sys.argv = [{cmd!r}, '--help']
            from {mod} import {func}
            try: {func}()
            except SystemExit: pass
            print(sorted({{'torch', 'timm', 'fastai', 'papermill', 'nbformat'}} & set(sys.modules)))
            """))
        r = subprocess.run([sys.executable, 'help.py'], cwd=tmp_path, capture_output=True, text=True)
        assert '--set KEY=VALUE' in r.stdout and r.stdout.strip().splitlines()[-1] == '[]', (cmd, r.stdout[-2000:] + r.stderr[-2000:])


def test_bad_set_is_one_line(tmp_path):
    "An unknown `--set` key or a value of the wrong type: one line naming the valid keys, exit status 2, nothing run."
    for args, msg in [(['--set', 'emma=0.9'], "unknown setting 'emma' in --set: the settings are model, strategy, seed"),
                      (['--set', 'views=two'], '--set views=two: expected int or none')]:
        r = subprocess.run([str(BIN/'dogft-run-all'), *args], cwd=tmp_path, capture_output=True, text=True, env={**os.environ, 'DOGFT_HOME': str(tmp_path)})
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith('dogft-run-all: error: ') and msg in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []
