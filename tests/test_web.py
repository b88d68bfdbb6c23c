"The web page (`dogft-export --web`): its arithmetic against `dogft.predict` in Node, and the page in headless Chromium against `dogft-predict` on 20 photos, bad files included."
import json, os, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dogft.core import decode_metadata
from dogft.data import prepare_data, read_split, shared_stanford_dogs
from dogft.predict import Classifier, load_image, preprocess
from dogft.testing import make_fake_run, make_fake_stanford, make_image, make_open_set_onnx
import dogft.web as web

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT/'dogft'/'site'
sys.path.insert(0, str(ROOT/'tools'))
from docs_check import find_chromium

REQUIRED = bool(os.environ.get('DOGFT_REQUIRE_CHROMIUM'))  # CI: a missing browser, Node or npm install is a failure, not a skip
TOL = dict(fp32=1e-3, int8=2e-2)  # the agreement on probabilities

def _need(ok, what:str):
    "Skip (or, in CI, fail) when `ok` is false."
    if ok: return
    if REQUIRED: pytest.fail(f'{what} (CI installs it: see .ci/run)')
    pytest.skip(what)

def _node(tmp_path, script:str)->dict:
    "Run `script` (an ES module that may import `./dogft.mjs`) in Node; its JSON output."
    _need(shutil.which('node'), 'no Node.js: `apt-get install -y nodejs`')
    shutil.copyfile(SITE/'dogft.js', tmp_path/'dogft.mjs')
    (tmp_path/'t.mjs').write_text(script)
    r = subprocess.run(['node', tmp_path/'t.mjs'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)

# ---- the arithmetic, in Node

METAS = [dict(input_size=[3, 224, 224], crop_pct=0.875, crop_mode='center', interpolation=i, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
         for i in ('bicubic', 'bilinear', 'lanczos', 'box', 'hamming')] + [
         dict(input_size=[3, 240, 200], crop_pct=0.9, crop_mode='center', interpolation='bicubic', mean=[0.5]*3, std=[0.5]*3),
         dict(input_size=[3, 224, 224], crop_pct=1.0, crop_mode='squash', interpolation='bicubic', mean=[0.5]*3, std=[0.5]*3),
         dict(input_size=[3, 64, 64], crop_pct=0.95, crop_mode='border', interpolation='bilinear', mean=[0.485, 0.456, 0.406], std=[0.5]*3)]

def test_js_preprocessing_is_pillows_bit_for_bit(tmp_path):
    "`dogft.js` turns decoded pixels into exactly the float32 input `dogft.predict.preprocess` makes: every interpolation and crop mode, landscape, portrait, tiny and thin images."
    rng = np.random.default_rng(0)
    shapes = [(500, 375), (333, 500), (224, 224), (1000, 40), (180, 150), (257, 300), (31, 17), (640, 2000)]
    cases = []
    for w,h in shapes:
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        a = (a//2 + np.roll(a, 1, 0)//2).astype(np.uint8)  # some structure, not only noise
        np.save(tmp_path/f'{w}x{h}.npy', a)
        for i,m in enumerate(METAS):
            cases.append(dict(px=f'{w}x{h}.raw', w=w, h=h, meta=m, ref=f'{w}x{h}_{i}.f32'))
            preprocess(Image.fromarray(a), m).tofile(tmp_path/cases[-1]['ref'])
        a.tofile(tmp_path/f'{w}x{h}.raw')
    (tmp_path/'cases.json').write_text(json.dumps(cases))
    out = _node(tmp_path, """
import {resizeCrop, toTensor} from './dogft.mjs';
import fs from 'fs';
const dir = new URL('.', import.meta.url).pathname, cases = JSON.parse(fs.readFileSync(dir + 'cases.json'));
const worst = [];
for (const c of cases) {
  const rgb = fs.readFileSync(dir + c.px), n = c.w * c.h, data = new Uint8ClampedArray(n * 4);
  for (let i = 0; i < n; i++) { data[i*4] = rgb[i*3]; data[i*4+1] = rgb[i*3+1]; data[i*4+2] = rgb[i*3+2]; data[i*4+3] = 255; }
  const x = toTensor(resizeCrop({data, width: c.w, height: c.h}, c.meta), c.meta), b = fs.readFileSync(dir + c.ref);
  const ref = new Float32Array(b.buffer, b.byteOffset, b.length / 4);
  let d = x.length === ref.length ? 0 : Infinity;
  for (let i = 0; i < ref.length; i++) d = Math.max(d, Math.abs(x[i] - ref[i]));
  worst.push(d);
}
console.log(JSON.stringify(worst));
""")
    assert len(out) == len(cases) == 64
    assert max(out) == 0, [(c['w'], c['h'], c['meta']['interpolation'], c['meta']['crop_mode'], d) for c,d in zip(cases, out) if d]

def test_js_reads_the_models_metadata(tmp_path):
    "`onnxMetadata` + `decodeMetadata` read what `dogft.core.decode_metadata` reads from the same file, and refuse a file without dogft metadata."
    import onnx
    p = make_open_set_onnx(tmp_path/'m.onnx')
    want = decode_metadata({x.key: x.value for x in onnx.load(str(p)).metadata_props})
    out = _node(tmp_path, """
import {onnxMetadata, decodeMetadata} from './dogft.mjs';
import fs from 'fs';
const dir = new URL('.', import.meta.url).pathname, meta = decodeMetadata(onnxMetadata(fs.readFileSync(dir + 'm.onnx')), 1, ['class_names', 'input_size']);
let refused = null;
try { decodeMetadata({}, 1, []); } catch (e) { refused = e.message; }
console.log(JSON.stringify({meta, refused}));
""")
    assert out['meta'] == want
    assert 'no dogft metadata' in out['refused']

def test_js_file_checks(tmp_path):
    "What the page says before decoding: a text file renamed .jpg, a truncated JPEG, an empty file, a PNG of 100 megapixels (from its header), a file over the size limit; good photos pass."
    good = {'photo.jpg': make_image((120, 90)), 'photo.png': make_image((120, 90), fmt='PNG'), 'photo.webp': make_image((120, 90), fmt='WEBP')}
    bad = {'notes.jpg': b'these are my notes, not a photo\n' * 20, 'cut.jpg': make_image((120, 90))[:-200], 'empty.jpg': b''}
    big = tmp_path/'big.png'
    Image.new('L', (10000, 10000)).save(big)
    for k,v in {**good, **bad}.items(): (tmp_path/k).write_bytes(v)
    names = [*good, *bad, 'big.png']
    out = _node(tmp_path, """
import {fileProblem} from './dogft.mjs';
import fs from 'fs';
const dir = new URL('.', import.meta.url).pathname, out = {};
for (const n of %s) { const b = fs.readFileSync(dir + n); out[n] = fileProblem(b.length, b.subarray(0, 262144), b.subarray(-1024), {maxBytes: 50e6, maxPixels: 89478485}); }
out.huge = fileProblem(60e6, new Uint8Array([0xff, 0xd8, 0xff]), new Uint8Array([0xff, 0xd9]), {maxBytes: 50e6, maxPixels: 89478485});
console.log(JSON.stringify(out));
""" % json.dumps(names))
    assert all(out[k] is None for k in good), out
    assert out['notes.jpg'].startswith('not an image') and 'truncated' in out['cut.jpg'] and 'empty' in out['empty.jpg']
    assert 'too large an image (10000×10000' in out['big.png'] and 'too large for an image (60.0 MB' in out['huge']

# ---- the page, in headless Chromium

@pytest.fixture(scope='module')
def models(tmp_path_factory):
    "fp32 and int8 exports and 20 test photos: the ImageNet-pretrained lite0 (its zero-shot head) on the real five breeds when the shared photos are here, else a tiny random model on synthetic photos."
    import dogft.export as ex
    root = tmp_path_factory.mktemp('webroot')
    if shared_stanford_dogs() is not None:
        from dogft.models import imagenet_zero_shot
        data = prepare_data(shared_stanford_dogs(), None, root/'data'/'processed', quiet=True)
        names = sorted(read_split(data).breed.unique())
        make_fake_run(root, data, 'efficientnet_lite0', 'zeroshot', 0, img_size=224, val_acc=0.9, net=imagenet_zero_shot('efficientnet_lite0', names))
    else:
        breeds = ('beagle', 'boxer', 'toy_poodle')
        data = prepare_data(make_fake_stanford(root/'src', breeds, n=10, layout='name'), ','.join(breeds), root/'data'/'processed', quiet=True)
        make_fake_run(root, data, 'test_efficientnet', 'freeze', 0)
    rep = ex.export_model(out_dir=root, quantize='int8', repeats=1, calib_images=32, quiet=True)
    assert rep['status'] == 'passed', rep
    df = read_split(data)
    test = df[df.split == 'test']
    photos = [data/p for p in test.path.iloc[np.linspace(0, len(test) - 1, 20).astype(int)]]
    return dict(fp32=Path(rep['fp32']['file']), int8=Path(rep['int8']['file'])), photos, root

@pytest.fixture(scope='module')
def browser():
    "Headless Chromium (Debian's), driven by Playwright."
    chromium = find_chromium()
    _need(chromium, 'no Chromium: `apt-get install -y chromium`')
    pw = pytest.importorskip('playwright.sync_api', reason='no playwright: pip install -e ".[dev]"')
    with pw.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=['--no-sandbox'])
        yield b
        b.close()

def _site(model:Path, dest:Path)->Path:
    "The page for `model`, with onnxruntime-web from the local npm install (CI: `npm ci`); nothing from the network."
    dist,_ = web.find_ort_web()
    _need(dist, f'no local onnxruntime-web {web.ORT_WEB_VERSION}: `npm ci` in the clone, or `{web.NPM_INSTALL}`')
    web.write_site(model, dest, runtime='local', quiet=True)
    return dest

def _open(browser, url:str):
    "A page at `url`, ready; it fails the test on any script error."
    page = browser.new_page(viewport=dict(width=1000, height=900))
    errors = []
    page.on('pageerror', lambda e: errors.append(str(e)))
    page.goto(url)
    info = page.evaluate('window.dogftPage.ready')
    assert not errors, errors
    return page, info

def _classify(page, path:Path)->dict:
    "Give the page `path` through its file input, as a user picking a file does; what it answered."
    n = page.evaluate('document.body.dataset.classified || "0"')
    page.set_input_files('#file', str(path))
    page.wait_for_function(f'(document.body.dataset.classified || "0") !== "{n}" || document.getElementById("message").className === "error"', timeout=60_000)
    return page.evaluate('window.dogftPage.last')

@pytest.mark.parametrize('precision', ['fp32', 'int8'])
def test_page_agrees_with_dogft_predict(models, browser, tmp_path, precision):
    "For 20 test photos the page's top breed is dogft-predict's and every probability is within 1e-3 (fp32) or 2e-2 (int8); its input tensor is dogft-predict's."
    files, photos, _ = models
    site = _site(files[precision], tmp_path/'site')
    clf = Classifier(files[precision])
    ref = clf.predict(photos, top_k=100)
    with web.serve_site(site) as url:
        page, info = _open(browser, url)
        assert info['backend'] == 'wasm' and info['crossOriginIsolated'] and info['threads'] >= 1
        worst_p, worst_x = 0.0, 0.0
        for path,r in zip(photos, ref):
            got = _classify(page, path)
            assert 'error' not in got, got
            want = {t['breed']: t['prob'] for t in r['top']}
            probs = dict(zip(info['classes'], got['probs']))
            assert got['top'][0]['breed'] == r['top'][0]['breed'], (path, got['top'], r['top'][:3])
            worst_p = max(worst_p, max(abs(probs[b] - p) for b,p in want.items()))
            x = np.array(page.evaluate('window.dogftPage.lastInput()'), np.float32)
            worst_x = max(worst_x, float(np.abs(x - preprocess(load_image(path), clf.meta).ravel()).max()))
        print(f'{precision}: max |Δp| {worst_p:.2e}, max |Δinput| {worst_x:.2e} over {len(photos)} photos')
        assert worst_p <= TOL[precision], worst_p
        if precision == 'fp32':
            shots = ROOT/'results'/'screenshots'
            shots.mkdir(parents=True, exist_ok=True)
            _classify(page, photos[0])
            page.screenshot(path=str(shots/'web.png'), full_page=True)
        page.close()

def test_page_bad_files_get_a_message(models, browser, tmp_path):
    "A text file renamed .jpg, a truncated JPEG and a 100-megapixel PNG each get a clear message in the page, and the page still classifies the next photo."
    files, photos, _ = models
    site = _site(files['int8'], tmp_path/'site')
    (tmp_path/'notes.jpg').write_text('these are my notes, not a photo\n' * 20)
    (tmp_path/'cut.jpg').write_bytes(photos[0].read_bytes()[:-500])
    Image.new('L', (10000, 10000)).save(tmp_path/'big.png')
    with web.serve_site(site) as url:
        page, _ = _open(browser, url)
        for name,words in [('notes.jpg', 'not an image'), ('cut.jpg', 'truncated'), ('big.png', 'too large an image')]:
            got = _classify(page, tmp_path/name)
            assert words in got.get('error', ''), got
            msg = page.inner_text('#message')
            assert name in msg and words in msg and page.is_hidden('#result'), msg
        assert 'error' not in _classify(page, photos[1])
        assert page.is_visible('#result') and page.inner_text('#message') == ''
        page.close()

def test_page_works_from_a_plain_static_server(models, browser, tmp_path):
    "Served as `python -m http.server` serves it (no isolation headers), the page runs on one thread and classifies a photo."
    files, photos, _ = models
    site = _site(files['int8'], tmp_path/'site')
    with web.serve_site(site, isolated=False) as url:
        page, info = _open(browser, url)
        assert not info['crossOriginIsolated'] and info['threads'] == 1
        assert 'one: the server does not send' in page.inner_text('#runtime')
        assert 'error' not in _classify(page, photos[2])
        page.close()

# ---- the docs' Try-it page (nbs/try, committed)

TRY = ROOT/'nbs'/'try'

def test_try_it_page_is_this_dogfts_page():
    "The committed page is what `dogft-export --web` writes today (else: `python -c \"from dogft.web import refresh_site; refresh_site('nbs/try')\"`), for its own model, with the pinned runtime."
    cfg = json.loads((TRY/'site.json').read_text())
    stale = [f for f in web.SITE_FILES if (TRY/f).read_bytes() != (SITE/f).read_bytes()]
    assert not stale, f"nbs/try has old page files {stale}: python -c \"from dogft.web import refresh_site; refresh_site('nbs/try')\""
    assert cfg['model'] == 'model.int8.onnx' and cfg['model_integrity'] == web.sri(TRY/cfg['model'])
    assert cfg['runtime']['source'] == 'cdn' and cfg['runtime']['version'] == web.ORT_WEB_VERSION
    assert {b: {r: (f['name'], f['integrity']) for r,f in fs.items()} for b,fs in cfg['runtime']['backends'].items()} == web.ORT_WEB_FILES
    assert sorted(p.name for p in TRY.iterdir()) == sorted([*web.SITE_FILES, 'model.int8.onnx', 'site.json'])

def test_pinned_hashes_are_the_npm_release():
    "`ORT_WEB_FILES`' hashes are those of the files npm installs for `ORT_WEB_VERSION` (jsDelivr serves the same files)."
    dist,_ = web.find_ort_web()
    _need(dist, f'no local onnxruntime-web {web.ORT_WEB_VERSION}: `npm ci` in the clone')
    assert json.loads((dist.parent/'package.json').read_text())['version'] == web.ORT_WEB_VERSION
    assert {b: {r: (n, web.sri(dist/n)) for r,(n,_) in fs.items()} for b,fs in web.ORT_WEB_FILES.items()} == web.ORT_WEB_FILES

@pytest.mark.skipif(shared_stanford_dogs() is None, reason='no shared Stanford Dogs folder')
def test_try_it_model_accuracy_is_what_the_page_says(tmp_path):
    "The Try-it model gets, on the five breeds' 121 test photos, the int8 accuracy nbs/try_it.ipynb states."
    import re
    from fastcore.nbio import read_nb
    data = prepare_data(shared_stanford_dogs(), None, tmp_path/'data'/'processed', quiet=True)
    test = read_split(data).query("split == 'test'")
    got = Classifier(TRY/'model.int8.onnx').predict([data/p for p in test.path], top_k=1)
    acc = np.mean([r['top'][0]['breed'] == b for r,b in zip(got, test.breed)])
    text = '\n'.join(c.source for c in read_nb(ROOT/'nbs'/'try_it.ipynb').cells if c.cell_type == 'markdown')
    stated = re.search(r'its int8 file is right on ([\d.]+)% of the photos', text)
    assert stated and f'{acc:.1%}' == f'{stated.group(1)}%', (acc, stated and stated.group(1))

def test_try_it_page_classifies_a_photo(browser, tmp_path):
    "The committed page, with its CDN runtime swapped for the same files served locally (no network here), loads its model and classifies a photo."
    dist,_ = web.find_ort_web()
    _need(dist, f'no local onnxruntime-web {web.ORT_WEB_VERSION}: `npm ci` in the clone')
    site = tmp_path/'try'
    shutil.copytree(TRY, site)
    (site/'ort').mkdir()
    for fs in web.ORT_WEB_FILES.values():
        for n,_ in fs.values(): shutil.copyfile(dist/n, site/'ort'/n)
    cfg = json.loads((site/'site.json').read_text())
    cfg['runtime']['base'] = 'ort/'  # the integrity hashes stay: the local files must be the CDN's files
    (site/'site.json').write_text(json.dumps(cfg))
    photo = tmp_path/'dog.jpg'
    photo.write_bytes(next(iter(sorted((shared_stanford_dogs() / 'golden_retriever').glob('*.jpg'))), None).read_bytes()
                      if shared_stanford_dogs() is not None else make_image((300, 240)))
    with web.serve_site(site) as url:
        page, info = _open(browser, url)
        assert info['model'] == 'efficientnet_lite0_full_s42' and info['precision'] == 'int8'
        got = _classify(page, photo)
        assert 'error' not in got and abs(sum(got['probs']) - 1) < 1e-6
        if shared_stanford_dogs() is not None: assert got['top'][0]['breed'] == 'golden_retriever', got['top']
        page.close()

# ---- the user's commands

def test_cli_export_web_then_plain_http_server(browser, tmp_path):
    "As the issue's user does it: `dogft-export --web site` then `python -m http.server -d site`; the page classifies a photo as dogft-predict does, and a bad --web folder is refused before the export."
    import socket, time, urllib.request
    _need(web.find_ort_web()[0], f'no local onnxruntime-web {web.ORT_WEB_VERSION}: `npm ci` in the clone')
    breeds = ('beagle', 'boxer')
    data = prepare_data(make_fake_stanford(tmp_path/'src', breeds, n=8, layout='name'), ','.join(breeds), tmp_path/'data'/'processed', quiet=True)
    make_fake_run(tmp_path, data, 'test_efficientnet', 'freeze', 0)
    env = {**os.environ, 'DOGFT_HOME': str(tmp_path)}
    env.pop('IN_TEST', None)
    bin_ = Path(sys.executable).parent
    (tmp_path/'mine').mkdir(); (tmp_path/'mine'/'notes.txt').write_text('keep')
    r = subprocess.run([bin_/'dogft-export', '--web', tmp_path/'mine', '--repeats', '1'], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 2 and 'not a page dogft wrote' in r.stderr and not (tmp_path/'models'/'export_report.json').exists()
    r = subprocess.run([bin_/'dogft-export', '--web', 'site', '--repeats', '1'], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'wrote the web page' in r.stdout and (tmp_path/'site'/'ort').is_dir()
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    srv = subprocess.Popen([sys.executable, '-m', 'http.server', '-d', 'site', '-b', '127.0.0.1', str(port)], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            try: urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=1); break
            except OSError: time.sleep(0.1)
        page, info = _open(browser, f'http://127.0.0.1:{port}/')
        assert info['precision'] == 'int8' and info['threads'] == 1
        photo = data/read_split(data).query("split == 'test'").path.iloc[0]
        got = _classify(page, photo)
        want = Classifier(tmp_path/'site'/'model.int8.onnx').predict([photo], top_k=2)[0]
        assert got['top'][0]['breed'] == want['top'][0]['breed'] and abs(got['top'][0]['prob'] - want['top'][0]['prob']) < TOL['int8']
        page.close()
    finally: srv.terminate(); srv.wait(10)

def test_page_takes_dropped_and_pasted_photos_and_says_when_opened_as_a_file(models, browser, tmp_path):
    "A photo dropped on the page or pasted into it is classified as one picked with the file input; opened as a file, the page says to serve it."
    import base64
    files, photos, _ = models
    site = _site(files['int8'], tmp_path/'site')
    give = """async ([b64, how]) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0)), dt = new DataTransfer();
        dt.items.add(new File([bytes], 'given.jpg', {type: 'image/jpeg'}));
        if (how === 'drop') document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        else document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true}));
    }"""
    want = Classifier(files['int8']).predict(photos[3:4], top_k=1)[0]['top'][0]['breed']
    with web.serve_site(site) as url:
        page, _ = _open(browser, url)
        for how in ('drop', 'paste'):
            n = page.evaluate('document.body.dataset.classified || "0"')
            page.evaluate(give, [base64.b64encode(photos[3].read_bytes()).decode(), how])
            page.wait_for_function(f'(document.body.dataset.classified || "0") !== "{n}"', timeout=60_000)
            got = page.evaluate('window.dogftPage.last')
            assert got['name'] == 'given.jpg' and got['top'][0]['breed'] == want, (how, got)
        page.close()
    page = browser.new_page()
    page.goto((site/'index.html').as_uri())
    assert 'has to come from a web server' in page.inner_text('#message')
    page.close()
