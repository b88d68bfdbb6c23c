"End-to-end tests of the data layer: the `dogft-data` console script, tar sources, downloads (all offline)."
import io, json, os, sys, shutil, socket, tarfile, threading, subprocess, hashlib, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from pathlib import Path

import pandas as pd, pytest
from PIL import Image

from dogft.core import DogftError
from dogft.testing import make_fake_stanford, make_image
from dogft.core import held_lock
from dogft.data import prepare_data, read_split, ensure_data, download, shared_stanford_dogs, split_sizes, SPLITS, SPLIT_FRACS, MAX_IMAGE_BYTES

CLI = Path(sys.executable).parent/'dogft-data'


def run_cli(*args, home, env=None, timeout=120):
    "Run `dogft-data` in `home` (also `DOGFT_HOME`); return the CompletedProcess."
    e = {k: v for k, v in os.environ.items() if k not in ('DOGFT_SOURCE', 'DOGFT_URL', 'DOGFT_HOME')}
    e.update(DOGFT_HOME=str(home), **(env or {}))
    cmd = [str(CLI)] if CLI.exists() else [sys.executable, '-c', 'from dogft.data import dogft_data; dogft_data()']
    return subprocess.run(cmd + list(args), cwd=home, env=e, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(r, *needles):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('dogft-data: error: '), r.stderr
    assert 'Traceback' not in r.stderr + r.stdout
    for n in needles: assert n in lines[0], lines[0]


def check_split(d, n_expected=None, fracs=SPLIT_FRACS):
    "Check a processed folder: files match split.csv, no duplicates, each class within one image of its share."
    df = read_split(d)
    if n_expected is not None: assert len(df) == n_expected
    assert list(df.columns[:6]) == ['path', 'breed', 'split', 'sha256', 'width', 'height']
    assert df.sha256.is_unique and df.path.is_unique
    files = sorted(p.relative_to(d).as_posix() for s in SPLITS for p in (d/s).rglob('*.jpg'))
    assert files == sorted(df.path)
    for b, g in df.groupby('breed'):
        n = len(g)
        for s, f in zip(SPLITS, fracs):
            assert abs((g.split == s).sum() - n*f) <= 1, (b, s)
        assert tuple((g.split == s).sum() for s in SPLITS) == split_sizes(n, fracs)
    return df


@pytest.fixture
def fake_src(tmp_path):
    src = make_fake_stanford(tmp_path/'src', breeds=('beagle', 'boxer', 'pug'), n=14)
    b = src/'n02088364-beagle'
    (b/'corrupt.jpg').write_bytes(make_image(seed=7)[:200])
    (b/'tiny.jpg').write_bytes(make_image((32, 32), seed=8))
    (b/'gray.jpg').write_bytes(make_image(mode='L', seed=9))
    (b/'cmyk.jpg').write_bytes(make_image(mode='CMYK', seed=10))
    (b/'png.jpg').write_bytes(make_image(fmt='PNG', seed=11))
    (b/'dup.jpg').write_bytes((b/'n02088364_3.jpg').read_bytes())
    return src


# ---------------------------------------------------------------- CLI end to end

def test_cli_folder_rerun_force_and_breeds(tmp_path, fake_src):
    home = tmp_path/'home'; home.mkdir()
    r = run_cli('--source', str(fake_src), '--breeds', 'beagle,boxer', home=home)
    assert r.returncode == 0, r.stderr
    assert 'wrote 31 images of 2 breeds' in r.stdout and 'total' in r.stdout
    d = home/'data'/'processed'
    df = check_split(d, 17 + 14)  # 14 + gray, cmyk, png beagles (dup, corrupt, tiny skipped) + 14 boxers
    bad = pd.read_csv(d/'bad_files.csv')
    assert sorted(bad.kind) == ['bad', 'bad', 'duplicate']
    assert {Image.open(d/p).mode for p in df.path} == {'RGB'}
    assert 'skipped 3 file(s)' in r.stdout
    # same inputs: a no-op
    mt = (d/'split.csv').stat().st_mtime_ns
    r = run_cli('--source', str(fake_src), '--breeds', 'boxer,beagle', home=home)
    assert r.returncode == 0 and 'up to date' in r.stdout, r.stdout
    assert (d/'split.csv').stat().st_mtime_ns == mt
    # --force redoes it, same split
    r = run_cli('--source', str(fake_src), '--breeds', 'beagle,boxer', '--force', home=home)
    assert r.returncode == 0 and '--force: rebuilding' in r.stdout
    assert (d/'split.csv').stat().st_mtime_ns != mt
    pd.testing.assert_frame_equal(read_split(d), df)
    # other breeds: rebuild, and say so
    r = run_cli('--source', str(fake_src), '--breeds', 'beagle,boxer,pug', home=home)
    assert r.returncode == 0 and 'breeds changed' in r.stdout
    df3 = check_split(d, 17 + 14 + 14)
    # a breed's split does not depend on the other breeds chosen
    pd.testing.assert_frame_equal(df3[df3.breed != 'pug'].reset_index(drop=True), df.reset_index(drop=True))
    # another seed: another split
    r = run_cli('--source', str(fake_src), '--breeds', 'beagle,boxer,pug', '--seed', '1', home=home)
    assert r.returncode == 0 and 'seed changed' in r.stdout
    assert not check_split(d).equals(df3)
    # other shares: another split of the same images, and the stamp says why
    r = run_cli('--source', str(fake_src), '--breeds', 'beagle,boxer,pug', '--seed', '1', '--split', '50,25,25', home=home)
    assert r.returncode == 0 and 'split changed (70/15/15 -> 50/25/25)' in r.stdout and 'split 50/25/25' in r.stdout, r.stdout
    assert set(check_split(d, fracs=(0.5, 0.25, 0.25)).sha256) == set(df3.sha256)
    assert [p.name for p in (home/'data').iterdir() if p.name.startswith('.')] == ['.processed.lock']  # no temporary folders left


def test_cli_errors_are_one_line(tmp_path, fake_src):
    home = tmp_path/'home'; home.mkdir()
    assert_one_line_error(run_cli('--source', str(fake_src), '--breeds', 'beagel', home=home), "unknown breed 'beagel'", 'beagle')
    assert_one_line_error(run_cli('--source', str(tmp_path/'nope'), home=home), 'does not exist', '--source')
    assert_one_line_error(run_cli('--source', str(fake_src), '--breeds', 'beagle,chihuahua', home=home), 'chihuahua')
    junk = tmp_path/'junk.tar'; junk.write_bytes(b'not a tar' * 100)
    assert_one_line_error(run_cli('--source', str(junk), '--breeds', 'beagle', home=home), 'cannot read archive')
    assert_one_line_error(run_cli('--source', str(fake_src), '--split', '60,15', home=home), "split '60,15'", 'sum to 100 (percent) or 1')
    assert not (home/'data'/'processed').exists()


def test_no_source_no_network(tmp_path):
    home = tmp_path/'home'; home.mkdir()
    t0 = time.time()
    r = run_cli('--breeds', 'beagle', home=home, env=dict(DOGFT_URL='http://127.0.0.1:1/images.tar'))
    assert time.time() - t0 < 60
    assert_one_line_error(r, '--source', 'DOGFT_SOURCE', '127.0.0.1:1')
    assert list(home.iterdir()) == []  # stopped before doing anything


def test_source_from_env(tmp_path, fake_src):
    home = tmp_path/'home'; home.mkdir()
    r = run_cli('--breeds', 'boxer', home=home, env=dict(DOGFT_SOURCE=str(fake_src)))
    assert r.returncode == 0, r.stderr
    check_split(home/'data'/'processed', 14)


def test_help():
    r = subprocess.run([str(CLI), '--help'], capture_output=True, text=True)
    assert r.returncode == 0 and all(f in r.stdout for f in ['--source', '--breeds', '--dest', '--force', '--seed', '--split'])


# ---------------------------------------------------------------- folder layouts and tar sources

def test_folder_layouts(tmp_path):
    a = make_fake_stanford(tmp_path/'a', breeds=('beagle', 'boxer'), n=10, layout='synset')
    b = make_fake_stanford(tmp_path/'b'/'Images', breeds=('beagle', 'boxer'), n=10, layout='synset').parent
    c = make_fake_stanford(tmp_path/'c', breeds=('beagle', 'boxer'), n=10, layout='name')
    res = [read_split(prepare_data(s, 'beagle,boxer', tmp_path/f'out{i}', quiet=True)) for i, s in enumerate([a, b, c])]
    for df in res[1:]: pd.testing.assert_frame_equal(df.drop(columns='source'), res[0].drop(columns='source'))


def make_tar(path, src, extra=()):
    "Tar the breed folders of `src` under `Images/`, then add `extra` TarInfo members."
    with tarfile.open(path, 'w') as tf:
        tf.add(src, arcname='Images')
        for ti, data in extra: tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return path


def _ti(name, type=tarfile.REGTYPE, linkname='', size=0):
    ti = tarfile.TarInfo(name); ti.type, ti.linkname, ti.size = type, linkname, size
    return ti


def test_tar_source_refuses_unsafe_members(tmp_path, fake_src):
    evil = make_image(seed=123)
    tar = make_tar(tmp_path/'images.tar', fake_src, extra=[
        (_ti('../evil.jpg', size=len(evil)), evil),
        (_ti('Images/n02088364-beagle/../../evil2.jpg', size=len(evil)), evil),
        (_ti('/abs/evil3.jpg', size=len(evil)), evil),
        (_ti('Images/n02088364-beagle/link.jpg', tarfile.SYMTYPE, '/etc/passwd'), None),
        (_ti('Images/n02108089-boxer/hard.jpg', tarfile.LNKTYPE, 'Images/n02108089-boxer/n02108089_0.jpg'), None),
        (_ti('Images/n02088364-beagle/dev', tarfile.CHRTYPE), None)])
    work = tmp_path/'work'; work.mkdir()
    d = prepare_data(tar, 'beagle,boxer', work/'data'/'processed', quiet=True)
    df = check_split(d, 17 + 14)
    bad = pd.read_csv(d/'bad_files.csv')
    unsafe = bad[bad.kind == 'unsafe']
    assert sorted(unsafe.source) == sorted(['../evil.jpg', 'Images/n02088364-beagle/../../evil2.jpg', '/abs/evil3.jpg',
                                            'Images/n02088364-beagle/link.jpg', 'Images/n02108089-boxer/hard.jpg',
                                            'Images/n02088364-beagle/dev'])
    assert unsafe.reason.str.contains('refused').all()
    assert not list(tmp_path.rglob('evil*.jpg')) and not Path('/abs').exists()
    # the same images as from the folder
    df2 = read_split(prepare_data(fake_src, 'beagle,boxer', tmp_path/'fromdir', quiet=True))
    pd.testing.assert_frame_equal(df.drop(columns='source'), df2.drop(columns='source'))


def test_tar_gz_source(tmp_path):
    src = make_fake_stanford(tmp_path/'src', breeds=('beagle',), n=8)
    with tarfile.open(tmp_path/'images.tar.gz', 'w:gz') as tf: tf.add(src, arcname='Images')
    check_split(prepare_data(tmp_path/'images.tar.gz', 'beagle', tmp_path/'out', quiet=True), 8)


def test_cross_label_duplicates_dropped(tmp_path):
    src = make_fake_stanford(tmp_path/'src', breeds=('toy_poodle', 'miniature_poodle'), n=10)
    same = make_image(seed=999)
    (src/'n02113624-toy_poodle'/'x.jpg').write_bytes(same)
    (src/'n02113712-miniature_poodle'/'y.jpg').write_bytes(same)
    d = prepare_data(src, 'toy_poodle,miniature_poodle', tmp_path/'out', quiet=True)
    check_split(d, 20)
    bad = pd.read_csv(d/'bad_files.csv')
    assert sorted(bad.source.str.rsplit('/', n=1).str[-1]) == ['x.jpg', 'y.jpg'] and (bad.kind == 'duplicate').all()


def test_ensure_data(tmp_path, fake_src):
    d = tmp_path/'proc'
    ensure_data(d, 'beagle', source=fake_src, quiet=True)
    mt = (d/'split.csv').stat().st_mtime_ns
    assert ensure_data(d, 'beagle') == d and (d/'split.csv').stat().st_mtime_ns == mt  # any source will do
    with pytest.raises(DogftError): read_split(tmp_path/'nothing')


# ---------------------------------------------------------------- hostile folders, split sizes, integrity, locks (issue 26)

def test_only_regular_files_are_read(tmp_path):
    "Links (to /dev/zero, a system file, an image), a FIFO, a socket, a sub-folder, a hidden and an oversized file: listed, never read, no hang."
    src = make_fake_stanford(tmp_path/'src', breeds=('beagle', 'boxer'), n=10)
    b = src/'n02088364-beagle'
    (b/'zero.jpg').symlink_to('/dev/zero')
    (b/'passwd.jpg').symlink_to('/etc/passwd')
    (b/'alias.jpg').symlink_to(b/'n02088364_0.jpg')
    os.mkfifo(b/'pipe.jpg')
    sock = socket.socket(socket.AF_UNIX); sock.bind(str(b/'sock.jpg'))
    (b/'more').mkdir(); (b/'more'/'x.jpg').write_bytes(make_image(seed=50))
    (b/'.hidden.jpg').write_bytes(make_image(seed=51))
    with open(b/'huge.jpg', 'wb') as f: f.truncate(MAX_IMAGE_BYTES + 1)  # sparse: nothing written to disk
    home = tmp_path/'home'; home.mkdir()
    try: r = run_cli('--source', str(src), '--breeds', 'beagle,boxer', home=home, timeout=60)  # a FIFO read would hang here
    finally: sock.close()
    assert r.returncode == 0, r.stderr
    d = home/'data'/'processed'
    check_split(d, 20)
    assert not list((home/'data').glob('.processed.tmp-*'))
    bad = pd.read_csv(d/'bad_files.csv').set_index('source')
    expected = {'zero.jpg': ('unsafe', 'a symlink: dogft reads only regular files'), 'passwd.jpg': ('unsafe', 'a symlink'),
                'alias.jpg': ('unsafe', 'a symlink'), 'pipe.jpg': ('unsafe', 'a FIFO (named pipe), not a file'),
                'sock.jpg': ('unsafe', 'a socket'), 'more': ('skipped', 'a folder'), '.hidden.jpg': ('skipped', 'a hidden file'),
                'huge.jpg': ('bad', f'too large: {MAX_IMAGE_BYTES + 1:,} bytes')}
    assert sorted(bad.index) == sorted(f'n02088364-beagle/{n}' for n in expected)
    for n,(kind,why) in expected.items():
        row = bad.loc[f'n02088364-beagle/{n}']
        assert row.kind == kind and row.reason.startswith(why), (n, row.to_dict())
    assert f'skipped {len(expected)} file(s)' in r.stdout


def test_breed_folder_link_refused_source_link_followed(tmp_path):
    "A breed folder that is a symlink is refused with the fix; the source itself may be a link to a folder."
    real = make_fake_stanford(tmp_path/'real', breeds=('beagle', 'boxer'), n=10)
    src = tmp_path/'src'; src.mkdir()
    (src/'n02088364-beagle').symlink_to(real/'n02088364-beagle')
    shutil.copytree(real/'n02108089-boxer', src/'n02108089-boxer')
    home = tmp_path/'home'; home.mkdir()
    assert_one_line_error(run_cli('--source', str(src), '--breeds', 'beagle,boxer', home=home), 'n02088364-beagle is a symlink', '--source')
    (tmp_path/'link').symlink_to(real)
    check_split(prepare_data(tmp_path/'link', 'beagle,boxer', tmp_path/'out', quiet=True), 20)


def test_tar_hidden_member_is_listed_not_read(tmp_path):
    src = make_fake_stanford(tmp_path/'src', breeds=('beagle',), n=8)
    tar = make_tar(tmp_path/'images.tar', src, extra=[(_ti('Images/n02088364-beagle/._n02088364_0.jpg', size=4), b'\x00\x05\x16\x07'),
                                                      (_ti('Images/n02088364-beagle/pipe.jpg', tarfile.FIFOTYPE), None)])
    d = prepare_data(tar, 'beagle', tmp_path/'out', quiet=True)
    check_split(d, 8)
    bad = pd.read_csv(d/'bad_files.csv')
    assert bad[['source', 'kind']].values.tolist() == [['Images/n02088364-beagle/._n02088364_0.jpg', 'skipped'], ['Images/n02088364-beagle/pipe.jpg', 'unsafe']]


def test_bad_files_csv_is_the_same_every_run(tmp_path, fake_src):
    "The skipped-files report names files by path and carries no memory addresses, so two builds write the same bytes."
    (fake_src/'n02088364-beagle'/'notes.jpg').write_bytes(b'not an image')  # Pillow's message for it names a BytesIO by its address
    home = tmp_path/'home'; home.mkdir()
    assert run_cli('--source', str(fake_src), '--breeds', 'beagle,boxer', home=home).returncode == 0
    first = (home/'data'/'processed'/'bad_files.csv').read_bytes()
    assert run_cli('--source', str(fake_src), '--breeds', 'beagle,boxer', '--force', home=home).returncode == 0
    assert (home/'data'/'processed'/'bad_files.csv').read_bytes() == first
    assert b' at 0x' not in first and b'notes.jpg,beagle,bad,cannot decode: UnidentifiedImageError: cannot identify image file\n' in first
    assert (prepare_data(fake_src, 'beagle,boxer', tmp_path/'again', quiet=True)/'bad_files.csv').read_bytes() == first


def test_every_breed_in_every_split(tmp_path):
    "A breed with too few images for the shares is refused, naming it, its count and the count needed; nothing is written."
    src = make_fake_stanford(tmp_path/'src', breeds=('beagle',), n=10)
    make_fake_stanford(src, breeds=('pug',), n=2, seed=1)
    home = tmp_path/'home'; home.mkdir()
    r = run_cli('--source', str(src), '--breeds', 'beagle,pug', home=home)
    assert_one_line_error(r, 'too few usable images for a 70/15/15 split', 'needs 4 per breed', 'pug has 2', '--breeds', '--split')
    assert not (home/'data'/'processed').exists() and not list((home/'data').glob('.processed.tmp-*'))
    with pytest.raises(DogftError, match='needs 3 per breed .* pug has 2'): prepare_data(src, 'beagle,pug', tmp_path/'p', split='50,25,25', quiet=True)
    (src/'n02110958-pug'/'extra.jpg').write_bytes(make_image(seed=77))  # 3 pugs: enough for 50/25/25, not for 70/15/15
    df = check_split(prepare_data(src, 'beagle,pug', tmp_path/'p', split='50,25,25', quiet=True), 13, fracs=(0.5, 0.25, 0.25))
    assert (pd.crosstab(df.breed, df.split) > 0).all().all() and set(df.split) == set(SPLITS)
    with pytest.raises(DogftError, match='pug has 3'): prepare_data(src, 'beagle,pug', tmp_path/'q', quiet=True)


def test_damaged_folder_is_never_up_to_date(tmp_path, fake_src):
    "A truncated or edited split.csv, or a missing image: readers refuse it with the fix, dogft-data rebuilds it and says why."
    home = tmp_path/'home'; home.mkdir()
    args = ('--source', str(fake_src), '--breeds', 'beagle,boxer')
    assert run_cli(*args, home=home).returncode == 0
    d = home/'data'/'processed'
    csv, df = d/'split.csv', read_split(d)
    whole = csv.read_bytes()
    stamp = json.loads((d/'stamp.json').read_text())
    assert (stamp['n_images'], stamp['split_sha256']) == (31, hashlib.sha256(whole).hexdigest())
    def damaged(why):
        with pytest.raises(DogftError, match=why): read_split(d)
        with pytest.raises(DogftError, match='dogft-data --force'): ensure_data(d)
        r = run_cli(*args, home=home)
        assert r.returncode == 0 and 'up to date' not in r.stdout, r.stdout
        assert r.stdout.startswith('rebuilding data/processed: '), r.stdout
        assert csv.read_bytes() == whole
        pd.testing.assert_frame_equal(read_split(d), df)
        return r.stdout.splitlines()[0]
    csv.write_bytes(whole[:len(whole)*2//3])  # truncated
    line = damaged('does not match its stamp')
    assert 'split.csv does not match its stamp (' in line and 'rows, expected 31)' in line, line
    csv.write_bytes(whole.replace(b',train,', b',val,', 1))  # edited, as many rows
    assert 'its rows were edited' in damaged('its rows were edited')
    (d/df.path[0]).unlink()  # an image gone
    assert '1 image(s) listed in split.csv are missing' in damaged('1 image\\(s\\) listed in split.csv are missing')
    # a stamp from before this check: still read, rebuilt once by dogft-data
    del stamp['split_sha256']; (d/'stamp.json').write_text(json.dumps(stamp))
    pd.testing.assert_frame_equal(read_split(d), df)
    r = run_cli(*args, home=home)
    assert r.returncode == 0 and 'its stamp is from an older dogft' in r.stdout, r.stdout
    assert 'up to date' in run_cli(*args, home=home).stdout


def test_one_rebuild_at_a_time(tmp_path, fake_src):
    "While another process holds the data folder's lock, dogft-data waits a little, then stops naming the holder's pid."
    home = tmp_path/'home'; home.mkdir()
    with held_lock(home/'data'/'.processed.lock', 'the data folder'):
        t0 = time.time()
        r = run_cli('--source', str(fake_src), '--breeds', 'beagle', home=home)
        assert time.time() - t0 >= 4  # it waited LOCK_WAIT (5 s) before giving up
    assert_one_line_error(r, 'the data folder data/processed is in use by pid', f'pid {os.getpid()} on ', 'then run this again')
    assert not (home/'data'/'processed').exists()
    r = run_cli('--source', str(fake_src), '--breeds', 'beagle', home=home)
    assert r.returncode == 0, r.stderr
    check_split(home/'data'/'processed', 17)


# ---------------------------------------------------------------- downloads over HTTP (local server)

class TarServer:
    "Serve `data` on 127.0.0.1 with Range support; `mode`: ok, cut (every response stops halfway), cut_once, norange."
    def __init__(self, data):
        self.data, self.mode, self.requests = data, 'ok', []
        srv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_GET(self):
                rng = self.headers.get('Range')
                srv.requests.append(rng)
                start = int(rng.split('=')[1].split('-')[0]) if rng and srv.mode != 'norange' else 0
                if start >= len(srv.data):
                    self.send_response(416); self.send_header('Content-Range', f'bytes */{len(srv.data)}')
                    self.send_header('Content-Length', '0'); self.end_headers(); return
                body = srv.data[start:]
                self.send_response(206 if start else 200)
                if start: self.send_header('Content-Range', f'bytes {start}-{len(srv.data)-1}/{len(srv.data)}')
                self.send_header('Content-Length', str(len(body)))
                self.send_header('Accept-Ranges', 'bytes')
                self.end_headers()
                cut = srv.mode == 'cut' or (srv.mode == 'cut_once' and len(srv.requests) == 1)
                self.wfile.write(body[:len(body)//2] if cut else body)
                self.wfile.flush()
                if cut: self.close_connection = True

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), H)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/images.tar'
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self): self.httpd.shutdown(); self.httpd.server_close()


@pytest.fixture
def served_tar(tmp_path):
    src = make_fake_stanford(tmp_path/'src', breeds=('beagle', 'boxer'), n=10)
    data = make_tar(tmp_path/'served.tar', src).read_bytes()
    srv = TarServer(data)
    yield srv
    srv.close()


def test_interrupted_download_resumes(tmp_path, served_tar):
    srv, data = served_tar, served_tar.data
    dest = tmp_path/'raw'/'images.tar'
    part = dest.with_name('images.tar.part')
    srv.mode = 'cut'
    with pytest.raises(DogftError, match='interrupted'): download(srv.url, dest, retries=0)
    assert not dest.exists() and part.exists() and part.stat().st_size == len(data)//2
    # a partial file never counts as done: prepare_data fails too and leaves nothing processed
    home = tmp_path/'home'
    with pytest.raises(DogftError): prepare_data(None, 'beagle,boxer', home/'data'/'processed', url=srv.url, quiet=True)
    assert not (home/'data'/'processed').exists() and not (home/'data'/'raw'/'images.tar').exists()
    # resume with a Range request
    srv.mode, srv.requests = 'ok', []
    assert download(srv.url, dest) == dest
    assert srv.requests == [f'bytes={len(data)//2}-']
    assert dest.read_bytes() == data and not part.exists()
    # a complete file is not downloaded again
    srv.requests = []
    download(srv.url, dest)
    assert srv.requests == []


def test_download_resumes_within_one_call(tmp_path, served_tar):
    srv = served_tar
    srv.mode = 'cut_once'
    dest = download(srv.url, tmp_path/'images.tar', sha256=hashlib.sha256(srv.data).hexdigest())
    assert dest.read_bytes() == srv.data
    assert srv.requests == [None, f'bytes={len(srv.data)//2}-']


def test_download_server_ignores_range(tmp_path, served_tar):
    srv = served_tar
    part = tmp_path/'images.tar.part'
    part.write_bytes(srv.data[:1000])
    srv.mode = 'norange'
    assert download(srv.url, tmp_path/'images.tar').read_bytes() == srv.data


def test_download_sha256_mismatch(tmp_path, served_tar):
    with pytest.raises(DogftError, match='sha256'): download(served_tar.url, tmp_path/'images.tar', sha256='0'*64)
    assert not (tmp_path/'images.tar').exists() and not (tmp_path/'images.tar.part').exists()


def test_prepare_from_url_and_cli(tmp_path, served_tar):
    home = tmp_path/'home'; home.mkdir()
    r = run_cli('--breeds', 'beagle,boxer', home=home, env=dict(DOGFT_URL=served_tar.url))
    assert r.returncode == 0, r.stderr
    assert (home/'data'/'raw'/'images.tar').read_bytes() == served_tar.data
    check_split(home/'data'/'processed', 20)
    # afterwards no network is needed: the stamp is up to date, and other breeds are read from data/raw/images.tar
    served_tar.close()
    r = run_cli('--breeds', 'beagle,boxer', home=home, env=dict(DOGFT_URL=served_tar.url))
    assert r.returncode == 0 and 'up to date' in r.stdout
    r = run_cli('--breeds', 'beagle', home=home, env=dict(DOGFT_URL=served_tar.url))
    assert r.returncode == 0, r.stderr
    check_split(home/'data'/'processed', 10)


# ---------------------------------------------------------------- the real images

@pytest.mark.skipif(shared_stanford_dogs() is None, reason='no shared Stanford Dogs folder')
def test_real_images_cli(tmp_path):
    home = tmp_path/'home'; home.mkdir()
    r = run_cli('--source', str(shared_stanford_dogs()), home=home)
    assert r.returncode == 0, r.stderr
    d = home/'data'/'processed'
    df = check_split(d, 799)
    assert df.groupby('breed').size().to_dict() == dict(beagle=195, boxer=151, german_shepherd=152,
                                                        golden_retriever=150, toy_poodle=151)
    assert (df.split.value_counts() > 0).all() and set(df.split) == set(SPLITS)
    r = run_cli('--source', str(shared_stanford_dogs()), home=home)
    assert r.returncode == 0 and 'up to date' in r.stdout


@pytest.mark.skipif(shared_stanford_dogs() is None, reason='no shared Stanford Dogs folder')
def test_real_poodles(tmp_path):
    "All three poodles split; the shared folder's two same-picture pairs are different crops (not byte-identical), so both copies stay."
    d = prepare_data(shared_stanford_dogs(), 'toy_poodle,miniature_poodle,standard_poodle', tmp_path/'p', quiet=True)
    df = check_split(d, 151 + 155 + 159)
    assert pd.read_csv(d/'bad_files.csv').empty


# ---------------------------------------------------------------- the loaders' cache

def test_cache_build_is_atomic(tmp_path):
    from dogft.loaders import cached_images, cache_spec, get_dls
    src = make_fake_stanford(tmp_path/'src', breeds=('beagle', 'boxer'), n=10)
    d = prepare_data(src, 'beagle,boxer', tmp_path/'p', quiet=True)
    df = read_split(d)
    victim = d/df.path[df.split == 'val'].iloc[-1]
    good = victim.read_bytes()
    victim.write_bytes(good[:100])  # damaged after the split was made
    with pytest.raises(DogftError, match='dogft-data --force'): cached_images(d, 'val', verbose=False)
    assert not list((d/'cache').iterdir())  # nothing half-written left behind
    victim.write_bytes(good)
    arr = cached_images(d, 'val', verbose=False)
    assert arr.shape == ((df.split == 'val').sum(), 224, 224, 3)
    # a new split.csv (other breeds) gets a new cache file; the loaders follow it
    d = prepare_data(src, 'beagle', tmp_path/'p', quiet=True)
    dls = get_dls(d, bs=4, device='cpu', verbose=False)
    assert dls.vocab == ['beagle'] and dls.valid.one_batch()[0].shape == (2, 3, 224, 224)


# ---------------------------------------------------------------- the official split (issue 27)

from dogft.testing import make_split_manifest, make_stanford_lists
from dogft.data import ALL_BREEDS, OFFICIAL_VAL

VAL_FRACS = (1 - OFFICIAL_VAL, OFFICIAL_VAL, 0.)


def names(s): return sorted(s.str.rsplit('/', n=1).str[-1])


def check_official(d, manifest):
    "The test split is the manifest's test, exactly; val is drawn from its train, 15% of each breed's (within one image)."
    df = read_split(d)
    m = pd.read_csv(manifest, sep='\t')
    assert names(df.source[df.split == 'test']) == sorted(m.file_name[m.split == 'test'])
    assert names(df.source[df.split != 'test']) == sorted(m.file_name[m.split == 'train'])
    for b, g in df.groupby('breed'):
        n_train = (g.split != 'test').sum()
        assert ((g.split == 'train').sum(), (g.split == 'val').sum()) == split_sizes(n_train, VAL_FRACS)[:2], b
        assert abs((g.split == 'val').sum() - OFFICIAL_VAL*n_train) <= 1 and (g.split == 'val').sum() >= 1
    files = sorted(p.relative_to(d).as_posix() for s in SPLITS for p in (d/s).rglob('*.jpg'))
    assert files == sorted(df.path)
    return df


def test_official_split_respected_and_deterministic(tmp_path):
    src = make_fake_stanford(tmp_path/'src', breeds=('beagle', 'boxer', 'pug'), n=40)
    manifest = make_split_manifest(src, n_train=25)
    d = prepare_data(src, 'beagle,boxer,pug', tmp_path/'a', split='official', quiet=True)
    df = check_official(d, manifest)
    assert df.split.value_counts().to_dict() == dict(train=3*21, val=3*4, test=3*15)
    again = prepare_data(src, 'beagle,boxer,pug', tmp_path/'b', split='official', quiet=True)
    assert (again/'split.csv').read_bytes() == (d/'split.csv').read_bytes()
    other = check_official(prepare_data(src, 'beagle,boxer,pug', tmp_path/'c', split='official', seed=0, quiet=True), manifest)
    assert set(other.sha256[other.split == 'test']) == set(df.sha256[df.split == 'test'])  # the seed draws validation only
    assert set(other.sha256[other.split == 'val']) != set(df.sha256[df.split == 'val'])
    stamp = json.loads((d/'stamp.json').read_text())
    assert stamp['key']['fracs'] == 'official' and stamp['key']['split_file']['path'] == str(manifest.resolve())


def test_official_split_breeds_all_cli(tmp_path):
    "`--breeds all --split official` end to end on a synthetic copy of the 120-breed folder (archive folder names)."
    src = make_fake_stanford(tmp_path/'src', breeds=ALL_BREEDS, n=6, size=(64, 64))
    manifest = make_split_manifest(src, n_train=4)
    home = tmp_path/'home'; home.mkdir()
    r = run_cli('--source', str(src), '--breeds', 'all', '--split', 'official', home=home, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'wrote 720 images of 120 breeds' in r.stdout and 'split official train/test from MANIFEST.tsv, validation 15% of train' in r.stdout
    df = check_official(home/'data'/'processed', manifest)
    assert len(df) == 720 and (df.split == 'test').sum() == 240 and df.breed.nunique() == 120
    r = run_cli('--source', str(src), '--breeds', 'all', '--split', 'official', home=home)
    assert r.returncode == 0 and 'up to date' in r.stdout


def test_official_split_needs_split_info(tmp_path, fake_src):
    home = tmp_path/'home'; home.mkdir()
    r = run_cli('--source', str(fake_src), '--split', 'official', '--breeds', 'beagle,boxer', home=home)
    assert_one_line_error(r, 'comes with no official train/test split', 'lists.tar', '--split 70,15,15')
    assert not (home/'data').exists()  # refused before anything is written
    (fake_src/'MANIFEST.tsv').write_text('folder\tfile_name\tsha256\n')  # a manifest without a split column is no split
    assert_one_line_error(run_cli('--source', str(fake_src), '--split', 'official', '--breeds', 'beagle', home=home), 'comes with no official train/test split')
    with tarfile.open(tmp_path/'images.tar', 'w') as tf: tf.add(fake_src, arcname='Images')
    with pytest.raises(DogftError, match='comes with no official'): prepare_data(tmp_path/'images.tar', 'beagle', tmp_path/'t', split='official')
    r = run_cli('--source', str(fake_src), '--split', 'officiel', home=home)
    assert_one_line_error(r, 'or official')


def test_switching_split_kind_rebuilds(tmp_path):
    src = make_fake_stanford(tmp_path/'src', breeds=('beagle', 'boxer'), n=20)
    manifest = make_split_manifest(src, n_train=12)
    home = tmp_path/'home'; home.mkdir()
    d = home/'data'/'processed'
    assert run_cli('--source', str(src), '--split', 'official', '--breeds', 'beagle,boxer', home=home).returncode == 0
    official = check_official(d, manifest)
    r = run_cli('--source', str(src), '--breeds', 'beagle,boxer', home=home)
    assert r.returncode == 0 and 'split changed (official -> 70/15/15)' in r.stdout.splitlines()[0], r.stdout
    check_split(d, 40)
    r = run_cli('--source', str(src), '--split', 'official', '--breeds', 'beagle,boxer', home=home)
    assert r.returncode == 0 and 'split changed (70/15/15 -> official)' in r.stdout.splitlines()[0], r.stdout
    assert read_split(d).equals(official)
    # an edited split file is another split
    m = pd.read_csv(manifest, sep='\t')
    i, j = m.index[m.split == 'train'][0], m.index[m.split == 'test'][0]  # one beagle image changes sides each way
    m.loc[i, 'split'], m.loc[j, 'split'] = 'test', 'train'
    m.to_csv(manifest, sep='\t', index=False)
    r = run_cli('--source', str(src), '--split', 'official', '--breeds', 'beagle,boxer', home=home)
    assert r.returncode == 0 and 'official split file changed (MANIFEST.tsv ' in r.stdout.splitlines()[0], r.stdout
    check_official(d, manifest)
    # a consumer asking for other breeds rebuilds with the official split it was made with
    ensure_data(d, 'beagle', source=src, quiet=True)
    assert json.loads((d/'stamp.json').read_text())['key']['fracs'] == 'official'
    assert set(read_split(d).breed) == {'beagle'}


def test_official_split_from_stanford_lists(tmp_path):
    "Stanford's own `lists.tar` beside `images.tar` (or `train_list.mat`/`test_list.mat` in a folder) gives the same split as the manifest."
    src = make_fake_stanford(tmp_path/'src', breeds=('beagle', 'pug'), n=20)
    manifest = make_split_manifest(src, n_train=12, name='ref.tsv')  # the same draw as the lists; not a name the data layer looks for
    with tarfile.open(tmp_path/'images.tar', 'w') as tf: tf.add(src, arcname='Images')
    make_stanford_lists(src, tmp_path/'lists.tar', n_train=12)
    t = check_official(prepare_data(tmp_path/'images.tar', 'beagle,pug', tmp_path/'t', split='official', quiet=True), manifest)
    make_stanford_lists(src, src, n_train=12)
    f = check_official(prepare_data(src, 'beagle,pug', tmp_path/'f', split='official', quiet=True), manifest)
    assert sorted(zip(t.sha256, t.split)) == sorted(zip(f.sha256, f.split))


def test_official_split_keeps_listed_copies_and_reports_the_rest(tmp_path):
    "The official split's rows are the dataset's: a cross-breed copy it lists stays (reported); unlisted and missing images are reported."
    src = make_fake_stanford(tmp_path/'src', breeds=('toy_poodle', 'miniature_poodle'), n=20)
    same = make_image(seed=999)
    (src/'n02113624-toy_poodle'/'x.jpg').write_bytes(same)
    (src/'n02113712-miniature_poodle'/'y.jpg').write_bytes(same)
    manifest = make_split_manifest(src, n_train=12)
    (src/'n02113624-toy_poodle'/'stray.jpg').write_bytes(make_image(seed=12345))
    (src/'n02113712-miniature_poodle'/'n02113712_0.jpg').unlink()
    d = tmp_path/'out'
    out = io.StringIO()
    from contextlib import redirect_stdout
    with redirect_stdout(out): prepare_data(src, 'toy_poodle,miniature_poodle', d, split='official')
    df = read_split(d)
    assert len(df) == 41 and df.sha256.duplicated().sum() == 1
    bad = pd.read_csv(d/'bad_files.csv')
    assert sorted(zip(bad.kind, bad.source.str.rsplit('/', n=1).str[-1])) == \
        [('kept', 'x.jpg'), ('kept', 'y.jpg'), ('missing', 'n02113712_0.jpg'), ('unlisted', 'stray.jpg')]
    assert 'label ambiguous' in bad.reason[bad.kind == 'kept'].iloc[0]
    assert 'skipped 2 file(s): 1 unlisted, 1 missing' in out.getvalue() or 'skipped 2 file(s): 1 missing, 1 unlisted' in out.getvalue()
    assert 'kept 2 byte-identical copies' in out.getvalue()
    assert json.loads((d/'stamp.json').read_text())['n_skipped'] == 2


def test_official_split_too_few_train(tmp_path):
    src = make_fake_stanford(tmp_path/'src', breeds=('beagle', 'pug'), n=10)
    make_split_manifest(src, n_train=3)  # 15% of 3 rounds to no validation image
    with pytest.raises(DogftError, match=r'pug has 3 train, 0 val, 7 test; validation needs 4 official train images\): .*--split 70,15,15'):
        prepare_data(src, 'beagle,pug', tmp_path/'out', split='official', quiet=True)
    assert not (tmp_path/'out').exists()


@pytest.mark.skipif(shared_stanford_dogs() is None, reason='no shared Stanford Dogs folder')
def test_real_official_split_seven_breeds(tmp_path):
    src = shared_stanford_dogs()
    seven = 'beagle,boxer,german_shepherd,golden_retriever,toy_poodle,miniature_poodle,standard_poodle'
    d = prepare_data(src, seven, tmp_path/'p', split='official', quiet=True)
    df = read_split(d)
    m = pd.read_csv(src/'OFFICIAL_SPLIT.tsv', sep='\t')
    assert len(df) == len(m) == 1113 and (df.split == 'test').sum() == (m.split == 'test').sum() == 413
    assert names(df.source[df.split == 'test']) == sorted(m.file_name[m.split == 'test'])
    assert df.split.value_counts().to_dict() == dict(train=7*85, val=7*15, test=413)
    assert pd.read_csv(d/'bad_files.csv').empty  # the poodles' same-picture pairs are different crops: nothing to report


REAL_120 = None if shared_stanford_dogs() is None else shared_stanford_dogs().parent/'stanford-dogs-120'

@pytest.mark.skipif(REAL_120 is None or not (REAL_120/'MANIFEST.tsv').exists(), reason='no shared 120-breed folder')
@pytest.mark.skipif(os.environ.get('DOGFT_SCALE_TESTS') != '1', reason='the 120-breed set is for scale checks: DOGFT_SCALE_TESTS=1 runs it')
def test_real_120_breeds_official_cli(tmp_path):
    "Issue 27's check: all 120 breeds, official split: 20,580 rows, 8,580 test, under 4 GiB, with progress (about 25 s)."
    import resource
    home = tmp_path/'home'; home.mkdir()
    r = run_cli('--source', str(REAL_120), '--breeds', 'all', '--split', 'official', home=home, timeout=600)
    assert r.returncode == 0, r.stderr
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 4*2**20  # KiB on Linux
    assert 'files/s' in r.stdout and 'verifying images: 20,580 files in' in r.stdout
    df = read_split(home/'data'/'processed')
    assert len(df) == 20580 and (df.split == 'test').sum() == 8580 and df.breed.nunique() == 120
    m = pd.read_csv(REAL_120/'MANIFEST.tsv', sep='\t')
    assert set(df.source[df.split == 'test']) == set(m.folder[m.split == 'test'] + '/' + m.file_name[m.split == 'test'])


# ---------------------------------------------------------------- classes of one's own (issue 27 part 1)

def test_a_folder_mixing_breeds_and_own_classes(tmp_path):
    from dogft.testing import make_own_classes
    src = make_fake_stanford(tmp_path/'src', breeds=('beagle',), n=8, layout='name')
    make_own_classes(src, ['red_square'], n=8)
    d = prepare_data(src, dest=tmp_path/'p', quiet=True)
    df = check_split(d, 16)
    assert sorted(df.breed.unique()) == ['beagle', 'red_square']  # not only breeds: every class, the breed under its own name
    stamp = (d/'stamp.json').read_text()
    assert prepare_data(src, 'all', d, quiet=True) == d and (d/'stamp.json').read_text() == stamp  # `all`: the folder's classes, up to date
    assert ensure_data(d, 'Red Square, beagle') == d and (d/'stamp.json').read_text() == stamp  # any spelling of the same classes
    with pytest.raises(DogftError, match="unknown class 'red_sqare'.*did you mean red_square"): ensure_data(d, 'red_sqare', source=src, quiet=True)
    with pytest.raises(DogftError, match='--split official is the Stanford Dogs split'): prepare_data(src, None, d, split='official', quiet=True)
    assert (d/'stamp.json').read_text() == stamp


def test_data_folder_follows_the_umask(tmp_path):
    "The processed folder gets the usual permissions (the umask's), not the private 0700 of a temporary folder: others sharing a home can read it."
    src = make_fake_stanford(tmp_path/'src', breeds=('beagle', 'boxer'), n=8)
    old = os.umask(0o022)
    try: dest = prepare_data(src, 'beagle,boxer', tmp_path/'data'/'processed', quiet=True)
    finally: os.umask(old)
    assert (dest.stat().st_mode & 0o777) == 0o755, oct(dest.stat().st_mode)
