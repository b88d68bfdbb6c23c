"The docs check (`tools/docs_check.py`): every page is processed by nbdev, renders, loads in headless Chromium with its title and figures, and shows no traceback."
import os, re, struct, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import docs_check

def _png_size(p:Path)->tuple[int, int]:
    "Width and height of a PNG file, from its header."
    head = p.read_bytes()[:24]
    assert head[:8] == b'\x89PNG\r\n\x1a\n', f'{p} is not a PNG'
    return struct.unpack('>II', head[16:24])

def test_quarto_markdown():
    "HTML-only rendering: markdown-only blocks go, other fenced divs are unwrapped, link attributes are dropped."
    md = '::: {.content-visible when-format="markdown"}\n![](examples/x.png)\n:::\nkept\n::: {.callout-note}\nnote\n:::\n[source](u){target="_blank"}'
    assert docs_check.quarto_markdown(md) == 'kept\nnote\n[source](u)'

def test_quarto_cell():
    "Quarto's cell options as Quarto applies them: `include: false` drops the cell, `echo: false` hides the code, `output: asis` makes printed text markdown."
    cell = lambda src, outs=(): dict(cell_type='code', source=src, metadata={}, outputs=list(outs), execution_count=None)
    assert docs_check.quarto_cell(cell('#| include: false\nx = 1')) is None
    c = docs_check.quarto_cell(cell('#| echo: false\n#| output: asis\nprint("**b**")', [dict(output_type='stream', name='stdout', text='**b**\n')]))
    assert c['source'] == 'print("**b**")' and c['metadata']['tags'] == ['remove_input']
    assert c['outputs'][0]['data'] == {'text/markdown': '**b**\n'}

def test_readme_for_markdown():
    "The README keeps Quarto's markdown-only blocks and drops HTML-only ones, like `quarto render -t gfm`."
    import make_readme
    md = '::: {.content-visible when-format="markdown"}\n![shot](examples/screenshots/home.png)\n:::\n\n::: {.content-visible when-format="html"}\nsite only\n:::\nend'
    assert make_readme.for_markdown(md) == '![shot](examples/screenshots/home.png)\n\nend'

def test_sidebar_lists_every_notebook():
    "`nbs/sidebar.yml` names every notebook once, and nothing else."
    assert docs_check.sidebar_problems() == []
    assert len(docs_check.pages()) == len(set(docs_check.pages()))

def test_docs_check(tmp_path):
    "tools/docs_check.py passes on this checkout and takes its screenshots."
    if docs_check.find_chromium() is None and not os.environ.get('DOGFT_REQUIRE_CHROMIUM'):
        pytest.skip('no Chromium to load the pages in: `apt-get install -y chromium` (Debian) or set $CHROMIUM; '
                    'CI installs it and sets DOGFT_REQUIRE_CHROMIUM=1, which turns this skip into a failure')
    shots = tmp_path/'screenshots'
    r = subprocess.run([sys.executable, ROOT/'tools'/'docs_check.py', '--out', tmp_path/'html', '--screenshots', shots],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f'docs check failed:\n{r.stdout}\n{r.stderr[-5000:]}'
    for name in docs_check.SCREENSHOTS:
        assert _png_size(shots/name) == (1280, 2000)
        assert (shots/name).stat().st_size > 50_000, f'{name} is nearly blank'

# Rerun history belongs in CHANGELOG.md and git, not in the user's pages (issue 24): a commit hash (7 to 40 hex
# digits with a letter and a digit, lower case as git writes them), a machine's load average, "measured again".
HISTORY = re.compile(r'\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b|(?i:load average|measured again)')
README_MAX_WORDS = 1300  # `wc -w README.md`; aim for about 1,200

def history_in(md:str)->list[str]:
    "Each match of `HISTORY` in `md`, with a little context."
    return [md[max(0, m.start()-40):m.end()+40].replace('\n', ' ') for m in HISTORY.finditer(md)]

def test_history_pattern():
    "The pattern finds hashes and history phrases, not numbers, words or sha256 digests."
    assert history_in('compare with commit 565299b') and history_in('Load average about 5') and history_in('rows measured again after')
    assert not history_in('seed 42, 1234567 images, accede, n02088364-beagle, efficientnet-lite0-57934424.pth, DEADBEEF1')
    assert not history_in('sha256 579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db')

def test_readme_length():
    "README.md is a user's document: at most 1,300 words as `wc -w` counts them."
    n = len((ROOT/'README.md').read_text().split())
    assert n <= README_MAX_WORDS, f'README.md has {n} words (at most {README_MAX_WORDS}): edit nbs/index.ipynb, then `python tools/make_readme.py`'

def test_no_rerun_history_in_docs():
    "No commit hash, load average or 'measured again' in README.md or the markdown of any page but the Studies page."
    from fastcore.nbio import read_nb
    found = [f'README.md: …{h}…' for h in history_in((ROOT/'README.md').read_text())]
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        if nb.name == 'studies.ipynb': continue
        for i,c in enumerate(read_nb(nb).cells):
            if c.cell_type == 'markdown': found += [f'nbs/{nb.name}, cell {i}: …{h}…' for h in history_in(c.source)]
    assert not found, 'rerun history belongs in CHANGELOG.md:\n' + '\n'.join(found)
