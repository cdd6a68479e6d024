"""The results tables of the README and the docs pages, rendered from the committed results files in `nbs/results/`.

A results file is a table as it is shown, `nbs/results/<name>.csv` (one column per shown column, the cells as
shown), and what it comes from, `nbs/results/<name>.json`: `date`, `command`, `version`, `machine`, the `settings`
of the run, a `note` printed under the table and a `source` (a run's own output, or the README it was transcribed
from). `mixmo-fastai bench` writes this format next to its other outputs (`table.csv`, `meta.json`).

A page shows the table `<name>` between two markers, which this script fills:

    <!-- results: fashion_mnist_bench -->
    (the table and its caption, generated)
    <!-- /results -->

    python tools/results.py            # refill the blocks of nbs/*.ipynb (the README and the docs are built from them)
    python tools/results.py --check    # exit 1 when a block of nbs/*.ipynb or README.md differs from its file
"""
import csv, json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
results = root/'nbs'/'results'
BLOCK = re.compile(r'<!-- results: ([\w-]+) -->\n.*?<!-- /results -->', re.S)

def read(name:str):
    "The rows (header first) and the metadata of results file `name`"
    with open(results/f'{name}.csv', newline='') as f: rows = list(csv.reader(f))
    return rows, json.loads((results/f'{name}.json').read_text())

def caption(meta:dict, name:str)->str:
    "Where a table comes from: its run (date, command, version, machine) and its file"
    cmd = meta['command']
    run = f"Run of {meta['date']}: " + (f"`{cmd}`" if cmd.startswith(('mixmo-fastai', 'python', 'accelerate', 'train_method')) else cmd)
    if meta.get('settings'): run += f" ({meta['settings']})"
    run += f"; mixmo_fastai {meta['version']}, {meta['machine']}."
    src = f"Table: `nbs/results/{name}.csv`" + (f", {meta['source']}" if meta.get('source') else '') + '.'
    return ' '.join(s for s in (meta.get('note', ''), run, src) if s)

def table_md(rows:list)->str:
    "A markdown table of `rows` (header first)"
    line = lambda r: '| ' + ' | '.join(r) + ' |'
    return '\n'.join([line(rows[0]), '|' + '---|'*len(rows[0])] + [line(r) for r in rows[1:]])

def render(name:str)->str:
    "The block of results file `name`: markers, table and caption"
    rows, meta = read(name)
    return f"<!-- results: {name} -->\n{table_md(rows)}\n\n{caption(meta, name)}\n<!-- /results -->"

def fill(text:str)->str:
    "`text` with each results block rendered from its file"
    return BLOCK.sub(lambda m: render(m[1]), text)

def blocks(text:str)->list:
    "The `(name, block)` pairs of `text`"
    return [(m[1], m[0]) for m in BLOCK.finditer(text)]

DOCS = 'https://mixmo-fastai.github.io/mixmo_fastai/'

def site_links(text:str)->str:
    "Links to docs pages (`page.html`) made absolute, for the README read outside the site"
    return re.sub(r'\]\(([\w-]+\.html)', lambda m: f']({DOCS}{m[1]}', text)

def notebooks(): return sorted((root/'nbs').glob('[!_.]*.ipynb'))

def fill_notebook(path:Path)->bool:
    "Refill the results blocks of the markdown cells of notebook `path`; True when it changed"
    text = path.read_text()
    nb = json.loads(text)
    changed = False
    for c in nb['cells']:
        if c['cell_type'] != 'markdown': continue
        src = ''.join(c['source'])
        new = fill(src)
        if new != src: c['source'], changed = new.splitlines(keepends=True), True
    if changed: path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    return changed

def stale()->list:
    "`(file, name)` of every block of nbs/*.ipynb and README.md that differs from its results file"
    res = []
    for p in notebooks() + [root/'README.md']:
        text = p.read_text()
        if p.suffix == '.ipynb': text = '\n'.join(''.join(c['source']) for c in json.loads(text)['cells'] if c['cell_type'] == 'markdown')
        shown = (lambda t: t) if p.suffix == '.ipynb' else site_links
        res += [(p.relative_to(root), name) for name, b in blocks(text) if b != shown(render(name))]
    return res

if __name__ == '__main__':
    if '--check' in sys.argv:
        bad = stale()
        for p, name in bad: print(f"{p}: table {name} differs from nbs/results/{name}.csv: run `python tools/results.py`")
        sys.exit(1 if bad else 0)
    for p in notebooks():
        if fill_notebook(p): print(f"refilled {p.relative_to(root)}")
