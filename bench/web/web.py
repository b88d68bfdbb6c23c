"""Web benchmark: the page `dogft-export --web` writes, in headless Chromium, against ONNX Runtime in Python, on the same photos.

For the fp32 and the int8 model: the median in-page inference time at batch 1 (after a warm-up run per photo) with
onnxruntime-web on WebAssembly (SIMD; threads when the page is cross-origin isolated, one thread when it is not), next to
`dogft-predict`'s ONNX Runtime (its `Classifier`, all cores, and one thread) timed at batch 1 on the same preprocessed
photos, in the same run. Also: how far the page's probabilities are from dogft-predict's. Target: the page's int8 at most
2x ONNX Runtime's int8 batch-1 latency.

    python bench/web/web.py                                  # $DOGFT_HOME models/ (dogft-export --quantize int8) and its test photos
    python bench/web/web.py --photos 20 --repeats 10 --name 'five breeds'

Needs Chromium (`apt-get install -y chromium`), Playwright (`pip install -e ".[dev]"`) and a local onnxruntime-web (`npm ci`).
`--name NAME` writes the report as NAME into results.json and results.md beside this script.
"""
import argparse, statistics, sys, tempfile, time
from pathlib import Path

import numpy as np

from dogft.core import DogftError, dogft_home
from dogft.data import read_split
from dogft.predict import Classifier, default_model, load_image, preprocess
from dogft import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib
sys.path.insert(0, str(benchlib.ROOT/'tools'))
from docs_check import find_chromium

TARGET = 2.0  # page int8 / ONNX Runtime int8, batch 1

def ort_times(clf:Classifier, photos:list, repeats:int)->list[float]:
    "Milliseconds of each timed batch-1 run of `clf` on each photo (one warm-up run per photo)."
    out = []
    for p in photos:
        x = preprocess(load_image(p), clf.meta)[None]
        clf.outputs(x)
        for _ in range(repeats):
            t0 = time.perf_counter(); clf.outputs(x); out.append(1000*(time.perf_counter() - t0))
    return out

def page_times(browser, site:Path, photos:list, repeats:int, isolated:bool)->tuple[dict, list, list]:
    "What the page runs on, the milliseconds of each timed in-page run (after a warm-up per photo), and its probabilities per photo."
    with web.serve_site(site, isolated=isolated) as url:
        page = browser.new_page()
        page.goto(url)
        info = page.evaluate('window.dogftPage.ready')
        ms,probs = [],[]
        for p in photos:
            n = page.evaluate('document.body.dataset.classified || "0"')
            page.set_input_files('#file', str(p))
            page.wait_for_function(f'(document.body.dataset.classified || "0") !== "{n}" || document.getElementById("message").className === "error"')
            r = page.evaluate('window.dogftPage.last')
            if 'error' in r: raise DogftError(f"the page could not classify {p}: {r['error']}")
            probs.append(r['probs'])
            ms += page.evaluate(f'window.dogftPage.timeRuns({repeats})')
        page.close()
    return info, ms, probs

def summary(ms:list)->dict:
    "Median and 90th percentile of timings (ms), and how many."
    return dict(median_ms=round(statistics.median(ms), 2), p90_ms=round(float(np.percentile(ms, 90)), 2), runs=len(ms))

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out-dir', default=None, help='root of models/ and data (default: $DOGFT_HOME, else .)')
    p.add_argument('--model', default=None, help='fp32 .onnx (default: the newest models/best_model_*.onnx); its .int8.onnx sits beside it')
    p.add_argument('--data-dir', default=None, help='processed data whose test photos are timed (default: the data folder of --out-dir)')
    p.add_argument('--photos', type=int, default=20, help='test photos, spread over the split (default: 20)')
    p.add_argument('--repeats', type=int, default=10, help='timed runs per photo and engine (default: 10)')
    p.add_argument('--name', default=None, help="the report's name in --results (without it the report is only printed)")
    p.add_argument('--results', default=str(benchlib.results_file(__file__)), help="the study's report file (default: results.json beside this script)")
    a = p.parse_args(argv)
    root = Path(a.out_dir) if a.out_dir else dogft_home()
    fp32 = Path(a.model) if a.model else default_model(root/'models')
    fp32 = fp32.with_name(fp32.name.replace('.int8.onnx', '.onnx'))  # the newest export may be the int8 file
    int8 = fp32.with_name(fp32.name.removesuffix('.onnx') + '.int8.onnx')
    if not int8.exists(): raise SystemExit(f"error: {int8} does not exist: run dogft-export --quantize int8")
    data = Path(a.data_dir) if a.data_dir else root/'data'/'processed'
    test = read_split(data).query("split == 'test'")
    photos = [data/q for q in test.path.iloc[np.linspace(0, len(test) - 1, min(a.photos, len(test))).astype(int)]]
    chromium = find_chromium()
    if chromium is None: raise SystemExit('error: no Chromium: apt-get install -y chromium')
    from playwright.sync_api import sync_playwright

    rows, agree, pages = [], {}, {}
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
        browser = pw.chromium.launch(executable_path=chromium, args=['--no-sandbox'])
        for prec,model in (('fp32', fp32), ('int8', int8)):
            site = Path(tmp)/prec
            web.write_site(model, site, runtime='local', quiet=True)
            for threads in (0, 1):
                clf = Classifier(model, threads=threads)
                rows.append(dict(engine='ONNX Runtime (Python)', precision=prec, threads=threads or 'all', **summary(ort_times(clf, photos, a.repeats))))
            ref = np.array([[{t['breed']: t['prob'] for t in r['top']}[c] for c in clf.class_names] for r in clf.predict(photos, top_k=len(clf.class_names))])
            for isolated in (True, False):
                info, ms, probs = page_times(browser, site, photos, a.repeats, isolated)
                pages[f'{prec}, {"isolated" if isolated else "not isolated"}'] = info
                rows.append(dict(engine='page (onnxruntime-web, WebAssembly SIMD)', precision=prec, threads=info['threads'],
                                 isolated=info['crossOriginIsolated'], **summary(ms)))
                agree[prec] = max(agree.get(prec, 0.0), float(np.abs(np.array(probs) - ref).max()))
        version = browser.version
        browser.close()
    med = {(r['engine'].startswith('page'), r['precision'], r['threads']): r['median_ms'] for r in rows}
    page_int8 = next(r for r in rows if r['engine'].startswith('page') and r['precision'] == 'int8' and r.get('isolated'))
    ratio = page_int8['median_ms']/med[(False, 'int8', 'all')]
    ratio_1 = next(r for r in rows if r['engine'].startswith('page') and r['precision'] == 'int8' and not r.get('isolated'))['median_ms']/med[(False, 'int8', 1)]
    report = dict(command=benchlib.command_line(__file__, argv), model=benchlib.show_path(fp32), photos=len(photos), repeats=a.repeats,
                  rows=rows, max_abs_prob_diff=agree, ratio_int8=round(ratio, 2), ratio_int8_one_thread=round(ratio_1, 2), target=TARGET,
                  met=bool(ratio <= TARGET), chromium=version, onnxruntime_web=web.ORT_WEB_VERSION,
                  machine=benchlib.machine_info())
    table = '\n'.join(f"| {r['engine']} | {r['precision']} | {r['threads']}{'' if 'isolated' not in r else (' (isolated)' if r['isolated'] else ' (not isolated)')} "
                      f"| {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['runs']} |" for r in rows)
    md = (f"# {a.name or 'web'}\n\n{len(photos)} test photos × {a.repeats} timed batch-1 runs each, after a warm-up run per photo; "
          f"Chromium {version}, onnxruntime-web {web.ORT_WEB_VERSION}.\n\n"
          f"| engine | model | threads | median ms | p90 ms | runs |\n|---|---|---|---|---|---|\n{table}\n\n"
          f"Page int8 (threads, cross-origin isolated) / ONNX Runtime int8 (all cores): **{ratio:.2f}×** (target ≤ {TARGET:g}×: "
          f"{'met' if ratio <= TARGET else 'not met'}); on one thread each: {ratio_1:.2f}×.\n"
          f"Largest difference between the page's probabilities and dogft-predict's: fp32 {agree['fp32']:.1e}, int8 {agree['int8']:.1e}.\n\n"
          f"`{report['command']}`\n\n{benchlib.machine_line(report['machine'])}\n")
    print(md)
    if a.name: benchlib.save_report(a.results, a.name, report, md)

if __name__ == '__main__': main()
