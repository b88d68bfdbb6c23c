"""Check the documentation site without Quarto: process the notebooks as `nbdev-docs` does, render each page
with nbconvert, and load it in headless Chromium.

`nbdev-proc-nbs` is `refresh_quarto_yml` + `nbdev_sidebar` + the module index + `proc_nbs`, after installing
Quarto when it is missing (with curl and sudo: not possible offline). This check calls `refresh_quarto_yml` and
`proc_nbs` (nbdev's notebook processing: front matter, `show_doc`, directives; it runs the cells nbdev runs at
docs time) into a fresh `_proc/`, one notebook at a time so that every broken page is reported, then:

- every notebook in `nbs/` is in `nbs/sidebar.yml`, and every sidebar entry exists;
- every notebook opens with a `# Title` and a `> summary`;
- no cell that nbdev runs at docs time (a cell with an import) does anything else (nbdev's FAQ: "cells
  containing imports and other code"), because at docs time the cells before it have not run;
- each page renders (nbconvert, no execution), loads in Chromium, has the notebook's H1 as its title and
  heading, shows every `<img>` (naturalWidth > 0), and has no Python traceback or error output.

The tutorial and the analysis page must show figures (their kept outputs of a real run). Screenshots of the home
page, the analysis page's report and the tutorial's results go to `examples/screenshots/`.

Run: `python tools/docs_check.py` (`--out DIR` keeps the HTML there; `--screenshots DIR`, `--no-screenshots`). Chromium: `$CHROMIUM`,
else `chromium` (Debian: `apt-get install -y chromium`), `chromium-browser` or `google-chrome` on the PATH.
Exit status 0 when every page passes, 1 with the list of problems.
"""
import argparse, ast, html, json, os, re, shutil, subprocess, sys, tempfile, time, warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
SHOTS = ROOT/'examples'/'screenshots'
# screenshot file: (notebook, id of the heading the screenshot starts at, or None for the top)
SCREENSHOTS = {'home.png': ('index', None), 'analysis.png': ('04_analysis', 'The-report'),
               'tutorial.png': ('tutorial', 'Compare-the-runs')}
# pages that must show real results: notebook -> fewest figures (kept outputs of a real run)
MIN_FIGURES = {'tutorial': 4, '04_analysis': 3}
BROWSERS = ('chromium', 'chromium-browser', 'google-chrome')
CHROME_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
                '--no-first-run', '--disable-component-update', '--disable-sync', '--hide-scrollbars']

def find_chromium()->str|None:
    "The Chromium binary: `$CHROMIUM`, else the first of `BROWSERS` on the PATH (None if there is none)."
    if os.environ.get('CHROMIUM'): return os.environ['CHROMIUM']
    return next((p for b in BROWSERS if (p := shutil.which(b))), None)

def pages(nbs:Path=NBS # the notebooks folder
         )->list[str]: # notebook stems in site order
    "The notebooks of the site, in `sidebar.yml` order."
    import yaml
    def _walk(items):
        for it in items:
            if isinstance(it, str): yield it
            elif 'href' in it: yield it['href']
            else: yield from _walk(it.get('contents', []))
    side = yaml.safe_load((nbs/'sidebar.yml').read_text())['website']['sidebar']['contents']
    return [Path(h).stem for h in _walk(side)]

def sidebar_problems(nbs:Path=NBS)->list[str]:
    "Notebooks missing from `sidebar.yml`, and sidebar entries without a notebook."
    listed = pages(nbs)
    found = sorted(p.stem for p in nbs.glob('*.ipynb') if not p.name.startswith(('_', '.')))
    return ([f"nbs/{n}.ipynb is not in nbs/sidebar.yml: add it where it belongs in the site" for n in found if n not in listed] +
            [f"nbs/sidebar.yml lists {n}.ipynb, which does not exist: remove it or add the notebook" for n in listed if n not in found])

def title_of(nb_path:Path)->tuple[str|None, str|None]:
    "The notebook's H1 and its `>` summary, from its first markdown cell (None where missing)."
    from fastcore.nbio import read_nb
    md = next((c.source for c in read_nb(nb_path).cells if c.cell_type == 'markdown'), '')
    h1 = re.search(r'^#\s+(.+?)\s*$', md, re.M)
    summary = re.search(r'^>\s*(.+?)\s*$', md, re.M)
    return (h1.group(1) if h1 else None), (summary.group(1) if summary else None)

def mixed_import_cells(nb_path:Path)->list[int]:
    "Indices of cells nbdev runs at docs time because they import, that also do something else."
    from nbdev.process import NBProcessor
    from nbdev.processors import _do_eval
    cells = NBProcessor(nb_path).nb.cells
    documented = lambda c: c.cell_type == 'code' and (c.directives_.keys() & {'export', 'exports', 'exec_doc'} or 'show_doc(' in c.source)
    if not any(map(documented, cells)): return []  # nbdev runs no cell of a notebook without exports or show_doc
    bad = []
    for c in cells:
        if c.cell_type != 'code' or c.directives_.keys() & {'export', 'exports', 'exporti', 'exec_doc'}: continue
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            if not _do_eval(c): continue
        trees = c.parsed_() or []
        is_doc = lambda t: isinstance(t, ast.Expr) and isinstance(t.value, ast.Call) and getattr(t.value.func, 'id', '') == 'show_doc'
        if not all(isinstance(t, (ast.Import, ast.ImportFrom)) or is_doc(t) for t in trees): bad.append(c.idx_)
    return bad

def process(names:list[str], # notebook stems
            nbs:Path=NBS)->tuple[Path, dict[str, str]]: # (the `_proc` folder, {stem: error})
    "Run nbdev's docs processing on each notebook into a fresh `_proc/`; collect the errors instead of stopping."
    from nbdev.quarto import refresh_quarto_yml
    from nbdev.serve import proc_nbs
    cwd,env = os.getcwd(),dict(os.environ)
    os.chdir(ROOT)  # as nbdev-docs does
    shutil.rmtree(ROOT/'_proc', ignore_errors=True)
    errors = {}
    try:
        refresh_quarto_yml()
        for n in names:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore')
                    proc_nbs(str(nbs), n_workers=0, file_glob=f'{n}.ipynb')
            except Exception as e: errors[n] = f'{type(e).__name__}: {e}'.strip()
    finally:
        os.chdir(cwd); os.environ.clear(); os.environ.update(env)  # nbdev sets IN_TEST while processing
    return ROOT/'_proc', errors

def frontmatter(nb:dict)->dict:
    "The YAML front matter nbdev puts in a processed notebook's first raw cell."
    import yaml
    c = nb['cells'][0] if nb['cells'] else {}
    m = re.match(r'\s*---\s*\n(.*?)\n---', ''.join(c.get('source', '')), re.S) if c.get('cell_type') == 'raw' else None
    return yaml.safe_load(m.group(1)) if m else {}

_DIRECTIVE = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')

def quarto_cell(cell:dict)->dict|None:
    "Apply a code cell's Quarto directives as Quarto would (`include`, `echo`, `output`); None: the cell is not shown."
    lines = ''.join(cell['source']).splitlines()
    d = {}
    while lines and (m := _DIRECTIVE.match(lines[0])): d[m.group(1)] = m.group(2).strip('"\''); lines.pop(0)
    if d.get('include') == 'false': return None
    cell = dict(cell, source='\n'.join(lines), metadata={})
    tags = []
    if d.get('echo') == 'false': tags.append('remove_input')
    if d.get('output') == 'false': tags.append('remove_output')
    if d.get('output') == 'asis':  # printed markdown is part of the page
        txt = ''.join(''.join(o.get('text', '')) for o in cell.get('outputs', []) if o.get('output_type') == 'stream')
        if txt: cell['outputs'] = [dict(output_type='display_data', data={'text/markdown': txt}, metadata={})]
    for o in cell.get('outputs', []):
        if 'text/markdown' in o.get('data', {}): o['data']['text/markdown'] = quarto_markdown(''.join(o['data']['text/markdown']))
    cell['metadata']['tags'] = tags
    return cell

def quarto_markdown(md:str)->str:
    "Markdown as Quarto shows it in HTML: markdown-only blocks dropped, other fenced divs unwrapped, link attributes removed."
    md = re.sub(r'^:::+[ \t]*\{[^}\n]*content-visible[^}\n]*when-format="markdown"[^}\n]*\}[ \t]*\n.*?^:::+[ \t]*$\n?', '', md, flags=re.M | re.S)
    md = re.sub(r'^:::+.*$\n?', '', md, flags=re.M)
    return re.sub(r'(\]\([^)\s]*\))\{[^}\n]*\}', r'\1', md)

_CELL_KEYS = {'cell_type', 'execution_count', 'id', 'metadata', 'outputs', 'source', 'attachments'}  # nbformat's; nbdev adds others

_CHECK_JS = """<script>
// `?from=ID`: start the page at the cell holding heading ID (for screenshots of one section; scrolling does not paint headless)
const from = new URLSearchParams(location.search).get('from');
const start = from && document.getElementById(from) && document.getElementById(from).closest('.jp-Cell');
if (start) for (let c = start.previousElementSibling; c; c = c.previousElementSibling) if (c.classList.contains('jp-Cell')) c.style.display = 'none';
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const r = {title: document.title, h1: [...document.querySelectorAll('h1')].map(h => h.textContent.trim()),
             images: imgs.length, broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => (i.getAttribute('src') || '').slice(0, 80)),
             traceback: document.body.innerText.includes('Traceback (most recent call last)'), text: document.body.innerText.length};
  const s = document.createElement('script'); s.type = 'application/json'; s.id = 'docs-check';
  s.textContent = JSON.stringify(r).replace(/</g, '\\\\u003c');
  document.body.appendChild(s);
});
</script>"""

def render(proc_nb:Path, # a processed notebook in `_proc/`
           dest:Path, # the HTML file to write
           nbs:Path=NBS # where relative image paths resolve, as for Quarto
          )->dict: # front matter
    "Render a processed notebook to a standalone HTML page with nbconvert (no execution), with its title, summary and the check script."
    import nbformat
    from nbconvert import HTMLExporter
    from traitlets.config import Config
    nb = json.loads(proc_nb.read_text())
    fm = frontmatter(nb)
    cells = []
    for c in nb['cells'][1 if fm else 0:]:
        if c['cell_type'] == 'code': c = quarto_cell(c)
        elif c['cell_type'] == 'markdown': c = dict(c, source=quarto_markdown(''.join(c['source'])), metadata={})
        if c is not None and c['cell_type'] != 'raw': cells.append({k: v for k,v in c.items() if k in _CELL_KEYS})
    nb['cells'] = cells
    cfg = Config({'TagRemovePreprocessor': dict(enabled=True, remove_input_tags=['remove_input'], remove_all_outputs_tags=['remove_output']),
                  'HTMLExporter': dict(exclude_input_prompt=True, exclude_output_prompt=True, embed_images=True)})
    body,_ = HTMLExporter(config=cfg, template_name='lab').from_notebook_node(
        nbformat.reads(json.dumps(nb), as_version=4), resources={'metadata': {'name': fm.get('title', proc_nb.stem), 'path': str(nbs)}})
    body = re.sub(r'<script[^>]*\ssrc="https?://[^"]*"[^>]*>\s*</script>', '', body)  # offline: no CDN require.js / MathJax
    title = html.escape(str(fm.get('title', '')))
    desc = re.sub(r'`([^`]+)`', r'<code>\1</code>', html.escape(str(fm.get('description', ''))))  # Quarto renders it as markdown
    head = f'<header style="padding: 1rem 2rem 0; font-family: system-ui, sans-serif"><h1 class="title">{title}</h1><p class="description"><em>{desc}</em></p></header>'
    body = re.sub(r'<title>.*?</title>', f'<title>{title} – dogft</title>', body, count=1, flags=re.S)
    body = re.sub(r'(<body[^>]*>)', r'\1' + head.replace('\\', r'\\'), body, count=1)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(body.replace('</body>', _CHECK_JS + '</body>', 1))
    return fm

def notebook_errors(proc_nb:Path)->list[str]:
    "Error outputs and tracebacks in a processed notebook's cells, one line each."
    out = []
    for i,c in enumerate(json.loads(proc_nb.read_text())['cells']):
        for o in c.get('outputs', []):
            txt = ''.join(o.get('text', '')) + ''.join(''.join(v) for v in o.get('data', {}).values() if isinstance(v, (str, list)))
            if o.get('output_type') == 'error': out.append(f"cell {i}: error output {o.get('ename')}: {o.get('evalue', '')[:120]}")
            elif 'Traceback (most recent call last)' in txt: out.append(f"cell {i}: a traceback in the output")
    return out

def chrome(browser:str, url:str, *args:str, timeout:int=60)->tuple[str, str]:
    "Run headless Chromium on `url` with `args`: its stdout, and the end of its stderr when it failed."
    with tempfile.TemporaryDirectory(prefix='docs-check-chrome-') as ud:
        try: r = subprocess.run([browser, *CHROME_FLAGS, f'--user-data-dir={ud}', *args, url],
                                capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired: return '', f'no answer in {timeout} s'
    return r.stdout, '' if r.returncode == 0 else f'exit status {r.returncode}: ' + ' | '.join(r.stderr.strip().splitlines()[-3:])

def browser_check(browser:str, page:Path)->dict:
    "Load `page` in Chromium: what the check script saw, or `{'error': ...}` if the page did not load."
    dom,err = chrome(browser, page.as_uri(), '--virtual-time-budget=10000', '--dump-dom')
    m = re.search(r'<script type="application/json" id="docs-check">(.*?)</script>', dom, re.S)
    return json.loads(m.group(1)) if m else {'error': err or 'the check script did not run'}

def page_problems(name:str, seen:dict, h1:str|None, min_figures:int=0)->list[str]:
    "What is wrong with a loaded page, given what the check script saw, the notebook's H1 and the figures it must show."
    if 'error' in seen: return [f"{name}: the page did not load in Chromium ({seen['error']})"]
    p = []
    if seen['images'] < min_figures:
        p.append(f"{name}: shows {seen['images']} figures, expected at least {min_figures}: execute the notebook on real results "
                 f"(`jupyter nbconvert --to notebook --execute --inplace`) and commit it with its outputs")
    if h1 and not seen['title'].startswith(h1): p.append(f"{name}: page title {seen['title']!r} is not the notebook's H1 {h1!r}")
    if h1 and h1 not in seen['h1']: p.append(f"{name}: no <h1> {h1!r} on the page (found {seen['h1']})")
    if seen['broken']: p.append(f"{name}: {len(seen['broken'])} of {seen['images']} images did not load: {seen['broken']}")
    if seen['traceback']: p.append(f"{name}: a Python traceback is shown on the page")
    if seen['text'] < 200: p.append(f"{name}: the page is (nearly) empty ({seen['text']} characters)")
    return p

def screenshot(browser:str, page:Path, dest:Path, anchor:str|None=None)->str:
    "A 1280×2000 screenshot of `page` (from the section with heading id `anchor`) into `dest`; what went wrong, or ''."
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    _,err = chrome(browser, page.as_uri() + (f'?from={anchor}' if anchor else ''), '--virtual-time-budget=10000',
                   '--window-size=1280,2000', f'--screenshot={dest}')
    return err or ('' if dest.exists() else 'no screenshot written')

def check(out:Path|None=None, # where the HTML pages go; None: a temporary folder
          shots:Path|None=SHOTS, # where the screenshots go; None: no screenshots
          say=print)->list[str]: # the problems found
    "Process, render and load every page of the site; the list of problems (empty: the docs are fine)."
    browser = find_chromium()
    if browser is None: return ["no Chromium found: install it (Debian: `apt-get install -y chromium`) or set $CHROMIUM"]
    if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # document this checkout's library
    problems,t0 = sidebar_problems(),time.time()
    names = [n for n in pages() if (NBS/f'{n}.ipynb').exists()]
    titles = {n: title_of(NBS/f'{n}.ipynb') for n in names}
    for n,(h1,summary) in titles.items():
        if not h1: problems.append(f"nbs/{n}.ipynb: the first markdown cell has no `# Title` line")
        if not summary: problems.append(f"nbs/{n}.ipynb: the first markdown cell has no `> summary` line")
    mixed = {n: c for n in names if (c := mixed_import_cells(NBS/f'{n}.ipynb'))}
    for n,cells in mixed.items():
        problems.append(f"nbs/{n}.ipynb cells {cells}: nbdev runs these at docs time (they import) but they also do other "
                        f"work, which fails or is slow there: move the imports into an imports-only cell")
    todo = [n for n in names if n not in mixed]
    proc,errors = process(todo)
    say(f"docs-check: processed {len(todo)} notebooks in {time.time() - t0:.0f} s")
    for n,e in errors.items(): problems.append(f"nbs/{n}.ipynb: nbdev's docs processing failed: {e.splitlines()[0][:300]}")
    from nbdev.config import nbpath2html
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix='docs-check-'))
    html_pages = {}
    for n in todo:
        if n in errors or not (proc/f'{n}.ipynb').exists(): continue
        html_pages[n] = out/nbpath2html(Path(f'{n}.ipynb')).name
        try: render(proc/f'{n}.ipynb', html_pages[n])
        except Exception as e:
            problems.append(f"nbs/{n}.ipynb: nbconvert could not render the processed notebook: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            continue
        problems += [f"nbs/{n}.ipynb {e}" for e in notebook_errors(proc/f'{n}.ipynb')]
        seen = browser_check(browser, html_pages[n])
        problems += page_problems(f"{html_pages[n].name} (nbs/{n}.ipynb)", seen, titles[n][0], MIN_FIGURES.get(n, 0))
        say(f"docs-check: {html_pages[n].name}: " + (f"{seen['images']} images, {len(seen['broken'])} broken" if 'error' not in seen else 'did not load'))
    if shots:
        for f,(n,anchor) in SCREENSHOTS.items():
            if n not in html_pages: continue
            if err := screenshot(browser, html_pages[n], Path(shots)/f, anchor): problems.append(f"screenshot {f} failed: {err}")
            else: say(f"docs-check: wrote {Path(shots)/f}")
    say(f"docs-check: {len(html_pages)} pages in {out} checked in {time.time() - t0:.0f} s")
    return problems

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', help='folder for the HTML pages (default: a temporary folder)')
    ap.add_argument('--screenshots', default=str(SHOTS), help='folder for the screenshots (default: examples/screenshots)')
    ap.add_argument('--no-screenshots', action='store_true', help='take no screenshots')
    a = ap.parse_args()
    found = check(a.out, None if a.no_screenshots else Path(a.screenshots))
    if found:
        print(f"docs-check: {len(found)} problem(s):\n" + '\n'.join(f'- {p}' for p in found), file=sys.stderr)
        sys.exit(1)
    print("docs-check: all pages passed")
