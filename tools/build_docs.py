"""Build the documentation site into `_docs/` from the notebooks, offline: nothing is downloaded.

    python tools/build_docs.py            # Quarto (what `nbdev-docs` runs) when `quarto` is on PATH, else pandoc
    python tools/build_docs.py --pandoc   # pandoc even where Quarto is installed

Both renderers start from nbdev's own processing of the notebooks into `_proc/` (`show_doc` rendered, hidden and
exported cells handled, names linked to their docs): the pages show the outputs committed in the notebooks
(`tools/run_docs_nbs.py` refreshes them); nothing but exported code, imports and `show_doc` runs here.

Quarto cannot be installed offline (the `quarto-cli` package on PyPI is a source package whose build downloads the
Quarto binary from GitHub), so without it the pages are rendered with pandoc (`pypandoc-binary`, in the `dev` extra,
or Debian's `pandoc`) into a static site of our own: a page per notebook, a sidebar, a table of contents, no
JavaScript and no link outside the site but the `[source]` links to GitHub.
"""
import argparse, ast, base64, functools, html, itertools, json, os, re, shutil, subprocess, sys, time, warnings
from pathlib import Path
from string import Template

root = Path(__file__).resolve().parent.parent
here = Path(__file__).resolve().parent

def _patch_nbdev():
    "Run at docs time only exported code, imports and `show_doc`, not the cells that mix an import with other code"
    # nbdev also runs any cell containing an import (and warns, "See FAQ"); ours mix imports into tests that need
    # earlier cells, which fail or train models at docs time. Their outputs come from the committed notebooks instead.
    import nbdev.processors as P
    orig = P._do_eval
    def _do_eval(cell):
        res = orig(cell)
        if not res or cell.directives_.keys() & {'export', 'exports', 'exporti', 'exec_doc'} or P._show_docs(cell.parsed_()): return res
        return all(isinstance(t, (ast.Import, ast.ImportFrom)) for t in cell.parsed_())
    P._do_eval = _do_eval
    warnings.filterwarnings('ignore', 'Found cells containing imports and other code')

def process_nbs():
    "nbdev's `_proc/` (what `nbdev-docs` renders), in this process so that `_patch_nbdev` applies"
    import nbdev.doclinks
    from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar
    from nbdev.serve import proc_nbs
    _patch_nbdev()
    refresh_quarto_yml()
    nbdev.doclinks._build_modidx()
    nbdev_sidebar.__wrapped__()
    return proc_nbs(n_workers=0, force=True)

def render_quarto(cache, cfg):
    "The rest of `nbdev-docs`"
    import nbdev.quarto
    from nbdev.quarto_render import render_quarto
    render_quarto(cache, cache/cfg.doc_path.name, n_workers=0)
    shutil.rmtree(cfg.doc_path, ignore_errors=True)
    shutil.move(cache/cfg.doc_path.name, cfg.config_path)
    nbdev.quarto._fix_quarto_nav(cfg.doc_path)

# ---- the pandoc renderer

def pandoc_path():
    "pandoc of `pypandoc-binary` (the dev extra), else the one on PATH"
    try:
        import pypandoc
        return pypandoc.get_pandoc_path()
    except (ImportError, OSError): pass
    if shutil.which('pandoc'): return shutil.which('pandoc')
    sys.exit('no pandoc: `pip install pypandoc-binary` (in the dev extra) or `apt-get install pandoc`')

def _src(x): return ''.join(x) if isinstance(x, list) else (x or '')

def _fenced(text, cls='cell-output'):
    fence = '`' * max(3, 1 + max((len(m) for m in re.findall(r'`+', text)), default=0))
    return f'{fence} {{.{cls}}}\n{text.rstrip()}\n{fence}'

def _options(src):
    "Quarto's `#| key: value` cell options that nbdev leaves in `_proc`, and the code without them"
    lines, opts = src.splitlines(), {}
    while lines and lines[0].startswith('#|'):
        k, _, v = lines.pop(0)[2:].partition(':')
        opts[k.strip()] = v.strip().lower()
    return opts, '\n'.join(lines).strip('\n')

_ansi_re = re.compile(r'\x1b\[[0-9;]*m')

def _output_md(o, save_image):
    "Markdown of output `o`, and whether it is markdown of its own (`show_doc`) rather than a block of the cell"
    if o['output_type'] == 'stream': return _fenced(_src(o['text'])), False
    if o['output_type'] == 'error': return _fenced(_ansi_re.sub('', '\n'.join(o.get('traceback', [])) or o.get('evalue', ''))), False
    data = o.get('data', {})
    for mime, ext in (('image/png', 'png'), ('image/jpeg', 'jpg')):
        if mime in data: return f'![]({save_image(base64.b64decode(_src(data[mime])), ext)}){{.cell-image}}', False
    if 'image/svg+xml' in data: return f'![]({save_image(_src(data["image/svg+xml"]).encode(), "svg")}){{.cell-image}}', False
    if 'text/markdown' in data: return _src(data['text/markdown']), True
    if 'text/html' in data: return f'```{{=html}}\n<div class="cell-html">{_src(data["text/html"])}</div>\n```', False
    if 'text/plain' in data: return _fenced(_src(data['text/plain'])), False
    return '', False

def nb_markdown(nb, save_image):
    "The page of a processed notebook as pandoc markdown, and its frontmatter"
    import yaml
    parts, fm = [], {}
    for c in nb['cells']:
        src = _src(c['source'])
        if c['cell_type'] == 'raw':
            m = re.match(r'^---\n(.*?)\n---\s*$', src, re.S)
            if m: fm.update(yaml.safe_load(m[1]) or {})
            continue
        if c['cell_type'] == 'markdown':
            if not src.startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'): parts.append(src)
            continue
        opts, code = _options(src)
        if opts.get('include') == 'false': continue
        cell = []
        if code and opts.get('echo') != 'false': cell.append((_fenced(code, 'python'), False))
        if opts.get('output') != 'false': cell += [_output_md(o, save_image) for o in c.get('outputs', [])]
        for own, group in itertools.groupby([p for p in cell if p[0]], lambda p: p[1]):
            # markdown outputs (`show_doc`) stay outside the cell's div, so that their headings are in the contents
            text = '\n\n'.join(p[0] for p in group)
            parts.append(text if own else '::: {.cell}\n\n' + text + '\n\n:::')
    return '\n\n'.join(parts) + '\n', fm

@functools.cache
def _help(pandoc): return subprocess.run([pandoc, '--help'], capture_output=True, text=True).stdout

def _pandoc(pandoc, md, tmp):
    "Code-highlighting CSS, table of contents and HTML body of `md`"
    tmpl = tmp/'.parts.html'
    tmpl.write_text('$highlighting-css$\n<!--SPLIT-->\n$table-of-contents$\n<!--SPLIT-->\n$body$')
    hl = '--syntax-highlighting' if '--syntax-highlighting' in _help(pandoc) else '--highlight-style'  # renamed in pandoc 3.8
    res = subprocess.run([pandoc, '-f', 'markdown-smart', '-t', 'html5', '--toc', '--toc-depth=3', '--mathml',
                          f'{hl}=pygments', '--template', str(tmpl), '--metadata', 'pagetitle=x'],
                         input=md, capture_output=True, text=True, check=True)
    return res.stdout.split('<!--SPLIT-->\n')

def render_pandoc(cache, cfg):
    import yaml
    pandoc, out = pandoc_path(), cfg.doc_path
    shutil.rmtree(out, ignore_errors=True); out.mkdir()
    for f in cache.rglob('*'):  # the pictures the notebooks link to (nbs/images/...)
        rel = f.relative_to(cache)
        if f.is_file() and f.suffix not in ('.ipynb', '.yml', '.html') and not any(p.startswith(('.', '_')) for p in rel.parts):
            (out/rel).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(f, out/rel)
    shutil.copy2(here/'docs_site.css', out/'styles.css')
    order = [c for c in yaml.safe_load((cache/'sidebar.yml').read_text())['website']['sidebar']['contents'] if isinstance(c, str)]
    pages = []
    for name in order:
        nb = json.loads((cache/name).read_text())
        stem, figs = Path(name).stem, []
        def save_image(b, ext, stem=stem, figs=figs):
            figs.append(b)
            p = Path(f'{stem}_files/figure-{len(figs)}.{ext}')
            (out/p).parent.mkdir(exist_ok=True); (out/p).write_bytes(b)
            return str(p)
        md, fm = nb_markdown(nb, save_image)
        # links between pages stay inside this site
        md = re.sub(re.escape(cfg.doc_url) + r'(?=[\w#])', '', md).replace(f']({cfg.doc_url})', '](index.html)')
        pages.append(dict(name=name, md=md, title=fm.get('title', stem), description=fm.get('description', ''),
                          href=fm.get('output-file', stem + '.html')))
    page = Template((here/'docs_page.html').read_text())
    for p in pages:
        css, toc, body = _pandoc(pandoc, p['md'], cache)
        nav = '\n'.join(f'<li><a href="{q["href"]}"{" class=active" if q is p else ""}>{html.escape(q["title"])}</a></li>' for q in pages)
        (out/p['href']).write_text(page.substitute(
            site=html.escape(cfg.title), title=html.escape(p['title']), description=html.escape(p['description']),
            nav=nav, toc=toc, body=body, highlighting_css=css, repo=cfg.git_url))
    return pages

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--pandoc', action='store_true', help='render with pandoc even where Quarto is installed')
    args = p.parse_args()
    os.chdir(root)
    from nbdev.config import get_config
    cfg = get_config()
    t = time.time()
    cache = process_nbs()
    # the results tables are rendered from their files (nbs/results/), whatever the notebooks hold
    sys.path.insert(0, str(here))
    import results
    for nb in cache.glob('*.ipynb'): results.fill_notebook(nb)
    print(f'notebooks processed into {cache.relative_to(root)}/ in {time.time()-t:.0f}s', flush=True)
    t = time.time()
    if shutil.which('quarto') and not args.pandoc: render_quarto(cache, cfg); how = 'quarto'
    else: render_pandoc(cache, cfg); how = 'pandoc'
    print(f'site rendered with {how} into {cfg.doc_path.relative_to(root)}/ in {time.time()-t:.0f}s')

if __name__ == '__main__': main()
