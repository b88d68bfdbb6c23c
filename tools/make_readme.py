"""Write README.md from nbs/index.ipynb without Quarto.

`nbdev-readme` renders the README through Quarto, which is not installable everywhere (CI has no
internet for its binary). This script produces the same content: markdown cells as they are,
code cells as fenced Python followed by their text output, `#| hide` cells left out; like Quarto's markdown output
it keeps Quarto's markdown-only blocks (`::: {.content-visible when-format="markdown"}`) and drops HTML-only ones,
and like nbdev's README filter it turns links to notebooks into links to the docs site.
Run: `python tools/make_readme.py` (or `--check` to fail when README.md is stale).
"""
import re, sys
from pathlib import Path
from fastcore.nbio import read_nb

ROOT = Path(__file__).resolve().parents[1]

def _directives(src):
    "Names of the `#|` directives at the top of a code cell."
    return {l[2:].strip().split(':')[0].split()[0] for l in src.splitlines() if l.startswith('#|') and l[2:].strip()}

def _render_output(out):
    "One cell output as README markdown: markdown as is, text indented as a code block."
    data = out.get('data', {})
    if 'text/markdown' in data: return ''.join(data['text/markdown']).strip()
    txt = ''.join(out.get('text', '') if out.get('output_type') == 'stream' else data.get('text/plain', '')).strip()
    return '    ' + txt.replace('\n', '\n    ') if txt else ''

_FENCE = re.compile(r'^:::+[ \t]*\{([^}]*)\}[ \t]*\n(.*?)^:::+[ \t]*$\n?', re.M | re.S)

def for_markdown(md:str)->str:
    "Quarto's conditional blocks as its markdown output has them: markdown-only content kept, other formats' dropped."
    def _one(m):
        attrs,body = m.group(1),m.group(2)
        fmt = re.search(r'when-format="([^"]+)"', attrs)
        if '.content-visible' in attrs and fmt: return body if fmt.group(1) in ('markdown', 'gfm') else ''
        if '.content-hidden' in attrs and fmt: return '' if fmt.group(1) in ('markdown', 'gfm') else body
        return m.group(0)
    return _FENCE.sub(_one, md)

def doc_links(md:str)->str:
    "Links to notebooks (`tutorial.ipynb`) as links to their pages on the docs site, as `nbdev-readme` writes them."
    from nbdev.config import get_config
    from nbdev.readme_filter import doc_link
    base = get_config(ROOT).doc_url
    return re.sub(r'(\]\()([^)\s]+)(\))', lambda m: m.group(1) + doc_link(m.group(2), base) + m.group(3), md)

def render(nb_path=ROOT/'nbs'/'index.ipynb'):
    "Markdown for the README from the index notebook."
    parts = []
    for cell in read_nb(nb_path).cells:
        if cell.cell_type == 'markdown': parts.append(doc_links(for_markdown(cell.source)).strip()); continue
        if cell.cell_type != 'code' or 'hide' in _directives(cell.source): continue
        code = '\n'.join(l for l in cell.source.splitlines() if not l.startswith('#|')).strip()
        if code and '#| echo: false' not in cell.source: parts.append(f'```python\n{code}\n```')
        parts += [md for md in map(_render_output, cell.get('outputs', [])) if md]
    return '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    txt, readme = render(), ROOT/'README.md'
    if '--check' in sys.argv:
        if readme.read_text() != txt: sys.exit('README.md is stale: run `python tools/make_readme.py`')
    else: readme.write_text(txt)
