"Progress output (`dogft.core.progress`): plain bounded lines in files and pipes, one rewritten line on a terminal, and the steps that use it."
import io, os, re, subprocess, sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import dogft.core
from dogft.core import progress
from dogft.testing import make_fake_stanford

ROOT = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    "A file that says it is a terminal."
    def isatty(self): return True


class NotTerminal(io.StringIO):
    "A file with an `isatty` method that says no (fastprogress took the bound method itself for a yes)."
    def isatty(self): return False


@pytest.fixture
def clock(monkeypatch):
    "A fake clock for `progress`: `clock.step` seconds pass per item."
    c = SimpleNamespace(t=1000., step=0.)
    def monotonic():
        c.t += c.step
        return c.t
    monkeypatch.setattr(dogft.core, 'time', SimpleNamespace(monotonic=monotonic))
    return c


def run(items, file=None, **kw):
    "Drive `progress` over `items`; return what it wrote."
    f = file if file is not None else NotTerminal()
    for _ in progress(items, file=f, **kw): pass
    return f.getvalue()


def check_plain(s, max_lines=12):
    "Plain output: whole lines, no carriage return, a bounded number of lines of bounded length."
    lines = s.splitlines()
    assert s.endswith('\n') and '\r' not in s, repr(s)
    assert 2 <= len(lines) <= max_lines, s
    assert all(len(l) < 200 for l in lines), s
    return lines


def test_short_loop_in_a_file_is_two_lines():
    lines = check_plain(run(range(799), desc='verifying images', unit='files'))
    assert lines[0] == 'verifying images (799 files) ...'
    assert re.fullmatch(r'verifying images: 799 files in \d+\.\d s', lines[1]), lines


@pytest.mark.parametrize('step,expected', [(1., [10*k for k in range(1, 10)]),   # 10 s per 10%: a line every 10%
                                           (5., [10*k for k in range(1, 10)]),   # slower: still every 10%, not every 10 s
                                           (0.5, [20, 40, 60, 80]),              # 10% takes 5 s: a line every 10 s instead
                                           (0.01, [])])                          # 1 s in all: start and end only
def test_lines_every_10_percent_or_10_seconds_whichever_is_rarer(clock, step, expected):
    clock.step = step
    lines = check_plain(run(range(100), desc='caching', unit='images'))
    counts = [int(re.match(r'caching: (\d+)/100 images', l).group(1)) for l in lines[1:-1]]
    assert counts == expected, lines
    assert lines[-1].startswith('caching: 100 images in ')


def test_long_loop_stays_short(clock):
    clock.step = 1.  # 10,000 items, 10,000 s
    lines = check_plain(run(range(10_000), desc='reading', unit='files'))
    assert len(lines) == 11 and lines[-1].startswith('reading: 10,000 files in 2 h 46 min'), lines
    assert 'left' in lines[1] and '(10%)' in lines[1], lines[1]


def test_unknown_length_lines_get_rarer(clock):
    clock.step = 1.  # an hour, length unknown: lines at about 10, 30, 70, 150, ... s
    lines = check_plain(run(iter(range(3600)), desc='reading images.tar', unit='files'))
    assert lines[0] == 'reading images.tar ...'
    assert [int(re.match(r'reading images.tar: ([\d,]+) files', l).group(1).replace(',', '')) for l in lines[1:-1]] == \
        [10, 30, 70, 150, 310, 630, 1270, 2550]
    assert 'left' not in ''.join(lines) and '%' not in ''.join(lines)


def test_bytes_resumed_download(clock):
    clock.step = 1.
    lines = check_plain(run([b'x' * 100_000] * 30, total=4_000_000, initial=1_000_000, desc='downloading images.tar', unit='B'))
    assert lines[0] == 'downloading images.tar (4.0 MB, 1.0 MB done before) ...'
    assert lines[1:-1] == ['downloading images.tar: 2.0/4.0 MB (50%), 0.1 MB/s, 20.0 s left',  # the rate counts this session's bytes
                           'downloading images.tar: 3.0/4.0 MB (75%), 0.1 MB/s, 10.0 s left'], lines
    assert re.fullmatch(r'downloading images.tar: 4\.0 MB in 3\d\.\d s \(0\.1 MB/s\)', lines[-1]), lines[-1]


def test_terminal_is_one_rewritten_line(clock):
    clock.step = 0.01  # 1000 items in 10 s: at most about 50 frames
    t = Terminal()
    s = run(range(1000), file=t, desc='verifying images', unit='files')
    assert s.count('\n') == 1 and s.endswith('\n') and s.startswith('\r')
    frames = s.rstrip('\n').split('\r')[1:]
    assert 40 <= len(frames) <= 53, len(frames)
    assert all(len(f) < 80 for f in frames)
    assert re.fullmatch(r'verifying images: 1,000 files in 10\.\d s \([\d.]+ files/s\)', frames[-1].rstrip()), frames[-1]
    for f in frames[1:-1]: assert re.fullmatch(r'verifying images: [\d,]+/1,000 files \(\d+%\), [\d.]+ files/s, [\d.]+ s left', f.rstrip()), f


def test_terminal_line_fits_the_terminal(clock, monkeypatch):
    monkeypatch.setenv('COLUMNS', '40')
    clock.step = 1.
    frames = run(range(5), file=Terminal(), desc='caching features of 559 training images × 4 views').split('\r')[1:]
    assert all(len(f.rstrip('\n')) <= 39 for f in frames), frames


def test_errors_end_the_line():
    def boom():
        yield 1; raise OSError('disk full')
    t = Terminal()
    with pytest.raises(OSError): run(boom(), file=t, desc='copying')
    assert t.getvalue().endswith(' (stopped)\n')  # the error message starts on a line of its own
    f = NotTerminal()
    with pytest.raises(OSError): run(boom(), file=f, desc='copying')
    assert f.getvalue() == 'copying ...\n'  # no final line claiming it was done


def test_quiet_and_default_stdout(capsys):
    assert list(progress(range(3), quiet=True)) == [0, 1, 2]
    assert capsys.readouterr().out == ''
    assert list(progress(range(3), desc='counting')) == [0, 1, 2]
    out = capsys.readouterr().out
    assert out.startswith('counting (3 items) ...\ncounting: 3 items in ') and '\r' not in out


def test_no_other_progress_library():
    "data, features and core use `dogft.core.progress` only; `dogft-data` loads neither tqdm nor fastprogress."
    for m in ('core', 'data', 'features'):
        src = (ROOT/'dogft'/f'{m}.py').read_text()
        assert 'tqdm' not in src and 'fastprogress' not in src, m
    r = subprocess.run([sys.executable, '-c', "import sys, dogft.data; print(sorted({'tqdm', 'fastprogress', 'torch', 'onnxruntime'} & set(sys.modules)))"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == '[]', r.stdout + r.stderr


def test_dogft_data_into_a_pipe(tmp_path):
    "A command's output captured by a pipe: the step's lines in order, no `\\r`, and nothing on stderr."
    src = make_fake_stanford(tmp_path/'src', breeds=('beagle', 'boxer'), n=6)
    env = {k: v for k, v in os.environ.items() if k not in ('DOGFT_SOURCE', 'DOGFT_URL')} | dict(DOGFT_HOME=str(tmp_path))
    r = subprocess.run([str(Path(sys.executable).parent/'dogft-data'), '--source', str(src), '--breeds', 'beagle,boxer'],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == '', r.stderr
    assert '\r' not in r.stdout
    lines = r.stdout.splitlines()
    i = lines.index('verifying images (12 files) ...')
    assert lines[i + 1].startswith('verifying images: 12 files in ') and lines[i + 2].startswith('wrote 12 images')
