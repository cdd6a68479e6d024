"""Look at the built site (`_docs/`, from tools/build_docs.py) as a person would, in headless Chromium.

    python tools/check_docs.py                      # every page; screenshots of index.html and mixmo.html
    python tools/check_docs.py --shots index.html manifold.html --out /tmp/shots

Every page of a notebook is opened in Chromium (Debian's `chromium` package): it fails when the page is missing,
when its main column is (nearly) empty, or when it shows fewer pictures than the notebook has (plots among the
committed outputs, images in its markdown) or a picture that does not load. The pages named by `--shots` are also
saved as PNG screenshots (to look at), and fail if a screenshot is blank. Exit status 0 when every check passes.
"""
import argparse, json, re, shutil, subprocess, sys, tempfile
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def chromium():
    for name in ('chromium', 'chromium-browser', 'google-chrome', 'chrome', 'chromium-headless-shell'):
        if shutil.which(name): return shutil.which(name)

def _flags(cell):
    "Directives of a code cell: `{name: value}` from its leading `#|` lines"
    res = {}
    for l in ''.join(cell['source']).splitlines():
        if not l.startswith('#|'): break
        k, _, v = l[2:].partition(':')
        res[k.strip()] = v.strip().lower()
    return res

def expected_pictures(nb_path:Path)->int:
    "Pictures the page of `nb_path` should show: image outputs of visible cells and images in the markdown"
    n = 0
    for c in json.loads(nb_path.read_text())['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown': n += len(re.findall(r'!\[[^\]]*\]\(', src)) + src.count('<img ')
        if c['cell_type'] != 'code': continue
        d = _flags(c)
        if d.keys() & {'hide', 'export', 'exporti', 'exports'} or d.get('include') == 'false' or d.get('output') == 'false': continue
        n += sum(any(k.startswith('image/') for k in o.get('data', {})) for o in c.get('outputs', []))
    return n

def pages(docs:Path):
    "`{page: notebook}` for the notebooks of nbs/, their page named as nbdev names it (frontmatter `output-file`)"
    res = {}
    for nb in sorted((root/'nbs').glob('[!_.]*.ipynb')):
        proc, href = root/'_proc'/nb.name, nb.stem + '.html'
        if proc.exists():
            m = re.search(r'^output-file: (\S+)$', ''.join(json.loads(proc.read_text())['cells'][0]['source']), re.M)
            if m: href = m[1]
        res[href] = nb
    return res

_probe = """<!DOCTYPE html><html><body><script>
const pages = %s;
function check(p) { return new Promise(done => {
  const f = document.createElement('iframe');
  f.style.width = '1280px'; f.style.height = '900px';
  f.onload = () => {  // the load event waits for the page's pictures
    const d = f.contentDocument, main = d && (d.querySelector('main') || d.body);
    if (!main || !d.title) return done({page: p, missing: true});
    const imgs = [...main.querySelectorAll('img')];
    done({page: p, text: main.innerText.trim().length, imgs: imgs.length,
          broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))});
  };
  f.src = p; document.body.appendChild(f);
}); }
(async () => {
  const res = [];
  for (const p of pages) res.push(await check(p));
  const pre = document.createElement('pre'); pre.id = 'result'; pre.textContent = JSON.stringify(res);
  document.body.appendChild(pre);
})();
</script></body></html>"""

def _run(browser, *args, timeout=120):
    return subprocess.run([browser, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--hide-scrollbars',
                           '--allow-file-access-from-files', *args], capture_output=True, text=True, timeout=timeout)

def probe(browser, docs:Path, hrefs):
    "What Chromium shows of each page: length of the main column's text, its pictures, the ones that did not load"
    probe_page = docs/'_check_docs.html'
    probe_page.write_text(_probe % json.dumps(hrefs))
    try: res = _run(browser, '--virtual-time-budget=60000', '--dump-dom', probe_page.as_uri())
    finally: probe_page.unlink()
    m = re.search(r'<pre id="result">(.*?)</pre>', res.stdout, re.S)
    if not m: sys.exit(f'Chromium gave no result for the pages:\n{res.stderr[-2000:]}')
    import html
    return json.loads(html.unescape(m[1]))

def screenshot(browser, page:Path, png:Path, size='1280,1600'):
    _run(browser, f'--window-size={size}', f'--screenshot={png}', page.as_uri())
    from PIL import Image
    im = Image.open(png).convert('L')
    hist = im.histogram()
    return 1 - max(hist) / sum(hist)  # fraction of pixels not of the commonest shade

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--docs', default=str(root/'_docs'), help='the built site')
    p.add_argument('--shots', nargs='*', default=['index.html', 'mixmo.html'], help='pages to screenshot')
    p.add_argument('--out', default=str(root/'_docs_shots'), help='folder for the screenshots')
    p.add_argument('--min-text', type=int, default=300, help='fewest characters of text a page must show')
    p.add_argument('--skip-without-browser', action='store_true', help='pass, saying so, where Chromium is not installed')
    args = p.parse_args()
    browser, docs = chromium(), Path(args.docs).resolve()
    if not browser and args.skip_without_browser: return print('docs check skipped: no Chromium (`apt-get install chromium`)')
    if not browser: sys.exit('no Chromium: `apt-get install chromium` (Debian)')
    if not (docs/'index.html').exists(): sys.exit(f'no site in {docs}: run `python tools/build_docs.py` first')
    expected = pages(docs)
    errors = []
    for r in probe(browser, docs, list(expected)):
        want = expected_pictures(expected[r['page']])
        if r.get('missing'): errors.append(f"{r['page']}: missing or not a page"); continue
        line = f"{r['page']}: {r['text']} characters, {r['imgs']} pictures (the notebook has {want})"
        if r['text'] < args.min_text: errors.append(f"{r['page']}: nearly empty ({r['text']} characters of text)")
        if r['imgs'] < want: errors.append(f"{r['page']}: {r['imgs']} pictures shown, the notebook has {want}")
        if r['broken']: errors.append(f"{r['page']}: pictures that do not load: {r['broken']}")
        print(line)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    for name in args.shots:
        png = out/(Path(name).stem + '.png')
        ink = screenshot(browser, docs/name, png)
        print(f'screenshot {png}: {ink:.1%} of the pixels drawn')
        if ink < 0.02: errors.append(f'{name}: the screenshot is blank')
    if errors: sys.exit('docs check failed:\n' + '\n'.join(errors))
    print(f'docs check passed: {len(expected)} pages')

if __name__ == '__main__': main()
