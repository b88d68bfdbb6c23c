"`dogft-predict` given hostile inputs (issue 26): FIFOs, devices, folders, huge files and broken model files each get one clear line, never a hang or a traceback, and the good images beside them are still classified."
import json, os, subprocess, sys
from pathlib import Path

import pytest
from PIL import Image

from dogft.predict import ImageError, MAX_IMAGE_BYTES, read_image_bytes
from dogft.testing import make_tiny_onnx

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='needs POSIX FIFOs and /dev/zero')

def predict(*args, timeout=120):
    "Run `dogft-predict`; a hang is a failure (`TimeoutExpired`), not a stuck test run."
    env = {k: v for k,v in os.environ.items() if k != 'IN_TEST'}
    return subprocess.run([str(BIN/'dogft-predict'), *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)

@pytest.fixture
def files(tmp_path):
    "A tiny model, two good photos, and a FIFO, a folder, a symlink to a photo, a sparse 51 MB file and a dangling symlink."
    d = tmp_path/'imgs'; d.mkdir()
    Image.new('RGB', (50, 40), (250, 10, 10)).save(d/'red.jpg')
    Image.new('RGB', (40, 70), (10, 10, 250)).save(d/'blue.png')
    os.mkfifo(d/'pipe.jpg')
    (d/'folder.jpg').mkdir()
    (d/'link.jpg').symlink_to(d/'blue.png')
    (d/'dead.jpg').symlink_to(d/'gone.jpg')
    with open(d/'huge.jpg', 'wb') as f: f.truncate(MAX_IMAGE_BYTES + 2**20)  # sparse: nothing is written, its size says 51 MB
    return dict(model=make_tiny_onnx(tmp_path/'models'/'m.onnx'), d=d)

def test_fifo_device_and_folder_do_not_stop_the_good_images(files):
    d = files['d']
    args = [d/'red.jpg', d/'pipe.jpg', '/dev/zero', d/'folder.jpg', d/'blue.png']
    r = predict(*args, '--model', files['model'], '--json', '--top-k', '1')
    assert r.returncode == 1, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert [l['path'] for l in lines] == [str(a) for a in args]
    assert [l.get('error') or l['top'][0]['breed'] for l in lines] == [
        'red', 'not a regular file (a FIFO)', 'not a regular file (a character device)', 'not a regular file (a directory)', 'blue']
    r = predict(*args, '--model', files['model'], '--top-k', '1')  # as text: the good ones on stdout, one line per bad one on stderr
    assert r.returncode == 1 and r.stdout.splitlines()[1:] == [f"{d/'red.jpg'}: red 100.0%", f"{d/'blue.png'}: blue 100.0%"], r.stdout
    err = [l for l in r.stderr.splitlines() if not l.startswith('dogft-predict: note: ')]  # the stand-in model has no open-set rule, and says so once
    assert err == [f"dogft-predict: {d/'pipe.jpg'}: error: not a regular file (a FIFO)",
                   "dogft-predict: /dev/zero: error: not a regular file (a character device)",
                   f"dogft-predict: {d/'folder.jpg'}: error: not a regular file (a directory)"], r.stderr

def test_symlinks_and_size_bound(files):
    d = files['d']
    r = predict(d/'link.jpg', d/'dead.jpg', d/'huge.jpg', '--model', files['model'], '--json', '--top-k', '1')
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert lines[0]['top'][0]['breed'] == 'blue'  # a symlinked photo is a photo
    assert lines[1]['error'] == 'a symbolic link to a missing file'
    assert lines[2]['error'] == 'too large for an image (51.0 MB, more than the 50.0 MB limit)'
    with pytest.raises(ImageError, match='too large'): read_image_bytes(d/'red.jpg', limit=10)

@pytest.mark.parametrize('kind', ['truncated', 'photo', 'no metadata', 'empty', 'folder', 'fifo'])
def test_broken_model_file_is_one_line(files, kind, tmp_path):
    "A model file that cannot be used: exit 2, one line naming the file and what is wrong, no traceback."
    good,m = files['model'],tmp_path/f'bad-{kind.replace(" ", "-")}.onnx'
    if kind == 'truncated': m.write_bytes(good.read_bytes()[:len(good.read_bytes())//2])
    elif kind == 'photo': m = files['d']/'red.jpg'
    elif kind == 'no metadata': make_tiny_onnx(m, meta=False)
    elif kind == 'empty': m.write_bytes(b'')
    elif kind == 'folder': m.mkdir()
    elif kind == 'fifo': os.mkfifo(m)
    r = predict(files['d']/'red.jpg', '--model', m)
    want = {'truncated': 'cannot load', 'photo': 'cannot load', 'empty': 'cannot load', 'no metadata': 'is not a dogft model',
            'folder': 'is not a regular file (a directory)', 'fifo': 'is not a regular file (a FIFO)'}[kind]
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
    assert r.stderr.count('\n') == 1 and r.stderr.startswith('dogft-predict: error: ') and str(m) in r.stderr and want in r.stderr, r.stderr
