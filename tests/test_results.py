"""The results tables of the README and the docs pages are their results files (`nbs/results/`), rendered by
`tools/results.py`: a changed number in a page or in a file fails here."""
import csv, json, re, sys
from pathlib import Path
import pytest
from helpers import ROOT
sys.path.insert(0, str(ROOT/'tools'))
import results

def _md(nb:Path)->str: return '\n'.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'markdown')
def _pages(): return {p.name: _md(p) for p in results.notebooks()} | {'README.md': (ROOT/'README.md').read_text()}
NAMES = sorted(p.stem for p in (ROOT/'nbs'/'results').glob('*.csv'))

def test_every_results_file_is_shown():
    shown = {name for text in _pages().values() for name, _ in results.blocks(text)}
    assert NAMES and shown == set(NAMES), set(NAMES) ^ shown

def test_tables_agree_with_their_files():
    assert results.stale() == [], "run `python tools/results.py` and `python tools/make_readme.py`"

def test_a_changed_number_fails(monkeypatch):
    "The check reads the numbers: one digit changed in a file makes the pages showing it stale"
    orig = results.read
    def read(name):
        rows, meta = orig(name)
        if name == 'fashion_mnist_bench': rows[1] = [c.replace('0.783', '0.784') for c in rows[1]]
        return rows, meta
    monkeypatch.setattr(results, 'read', read)
    assert {str(p) for p, name in results.stale() if name == 'fashion_mnist_bench'} == {'nbs/60_benchmarks.ipynb'}
    assert any(name == 'at_a_glance' for _, name in results.stale()) is False  # another table is untouched

_num = re.compile(r'\b0\.\d{3}')
# pages whose measured tables are still typed in
NOT_YET = set()  # every page's measured tables come from results files

def test_no_results_table_outside_a_block():
    "A table of measured numbers (three cells or more with 0.xxx) in a page must come from a results file"
    for page, text in _pages().items():
        if page in NOT_YET: continue
        rest = results.BLOCK.sub('', text)
        for table in re.findall(r'(?:^\|.*\|\n?)+', rest, re.M):
            cells = [c for l in table.splitlines() for c in l.split('|')]
            assert sum(bool(_num.search(c)) for c in cells) < 3, f"{page}: a results table not rendered from nbs/results/:\n{table[:300]}"

def test_each_table_says_its_run():
    for name in NAMES:
        rows, meta = results.read(name)
        assert all(meta.get(k) for k in ('date', 'command', 'version', 'machine', 'source')), name
        assert len({len(r) for r in rows}) == 1, f"{name}: rows of different lengths"
        cap = results.caption(meta, name)
        assert meta['date'] in cap and meta['command'] in cap and meta['version'] in cap

def test_at_a_glance_numbers_come_from_their_files():
    rows, meta = results.read('at_a_glance')
    assert len(meta['sources']) == len(rows) - 1
    for r, name in zip(rows[1:], meta['sources']):
        src = (ROOT/'nbs'/'results'/f'{name}.csv').read_text()
        for x in re.findall(r'\d+\.\d+', ' '.join(r[1:4])): assert x in src, f"{x} of {r[0]} not in {name}.csv"

def test_each_figure_once():
    "Every picture of nbs/images is shown by exactly one page (the README shows none of them again)"
    text = '\n'.join(_md(p) for p in results.notebooks())
    for png in (ROOT/'nbs'/'images').glob('*.png'):
        assert text.count(f'images/{png.name})') == 1, png.name

def test_readme_is_a_front_page():
    readme = (ROOT/'README.md').read_text()
    assert len(readme.splitlines()) <= 300
    for page in ('benchmarks', 'recipes', 'cost', 'architectures', 'finetune', 'gpu', 'compat'):
        assert f'mixmo_fastai/{page}.html' in readme, page
    pages = [t for p, t in _pages().items() if p not in NOT_YET]
    assert not re.search(r'(current|earlier) code', '\n'.join(pages))

def _study():
    "nbs/recipe_study.csv, the recipe study's own summary (`tools/recipe_study.py table --csv`), by run"
    rows = list(csv.DictReader(open(ROOT/'nbs'/'recipe_study.csv')))
    return {(r['net'], int(r['n']), int(r['width']), float(r['lr']), r['row'], int(r['epochs'])): r for r in rows}

def _first(cell): return float(re.search(r'\d+\.\d+', cell)[0])

def _check(study, key, acc, nll):
    r = study[key]
    assert round(float(r['accuracy']), 3) == acc and round(float(r['nll']), 3) == nll, (key, acc, nll, r)

def test_recipe_tables_agree_with_the_study_csv():
    "The recipe tables (transcribed from the README) say what the study's own summary says, row for row"
    study = _study()
    rows, _ = results.read('recipe_xresnet18')
    for net, recipe, epochs, acc, nll, *_ in rows[1:]:
        recipe, epochs = recipe.strip('*').split(' (')[0], int(epochs.strip('*').split('×')[-1])
        n = 1000 if '1,000' in net else 200
        net, width = ('resnet3', 64) if net.startswith('resnet3') else ('xresnet18', 32)
        if recipe == 'lines':
            (a_mid, a_end), (n_mid, n_end) = [[float(x) for x in re.findall(r'\d\.\d+', c)] for c in (acc, nll)]
            _check(study, (net, n, width, 0.01, 'lines_midpoint', epochs), a_mid, n_mid)
            _check(study, (net, n, width, 0.01, 'lines_ensemble', epochs), a_end, n_end)
        else: _check(study, (net, n, width, 0.01, recipe, epochs), _first(acc.strip('*')), _first(nll.strip('*')))
    rows, _ = results.read('recipe_digits_net')
    for setting, recipe, epochs, seeds, acc, nll, _ in rows[1:]:
        n, width, *lr = [s.strip() for s in setting.split(',')]
        lr = float(lr[0].split()[1]) if lr else 0.01
        key = ('digits', int(n), int(width), lr, recipe, int(epochs))
        _check(study, key, _first(acc), _first(nll))
        assert int(study[key]['seeds']) == int(seeds), key
    meta = json.loads((ROOT/'nbs'/'recipe_study.json').read_text())
    assert all(meta.get(k) for k in ('date', 'command', 'version', 'machine'))
