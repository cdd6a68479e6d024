"The package installs, exposes its public names the fastai way, and the README's commands are the real ones."
import importlib, re, subprocess, sys
from pathlib import Path
import mixmo_fastai
from helpers import ROOT

def test_version(): assert re.match(r'\d+\.\d+\.\d+', mixmo_fastai.__version__)

def test_all_exports_every_public_name():
    ns = {}
    exec('from mixmo_fastai.all import *', ns)
    modules = [l.split()[1].lstrip('.') for l in (ROOT/'mixmo_fastai'/'all.py').read_text().splitlines() if l.startswith('from .')]
    assert modules, "all.py imports no module"
    for m in modules:
        mod = importlib.import_module(f'mixmo_fastai.{m}')
        missing = [n for n in mod.__all__ if n not in ns]
        assert not missing, f"{m}: {missing} not in mixmo_fastai.all"

EDGES = ('bench', 'cli')  # built on the library, imported by name: their helpers are not the package's API

def test_every_generated_module_is_in_all():
    "A new notebook module must be added to all.py; the benchmark and the command line stay out: they are the edges"
    generated = {p.stem for p in (ROOT/'mixmo_fastai').glob('*.py') if not p.stem.startswith('_') and p.stem not in ('all',) + EDGES}
    text = (ROOT/'mixmo_fastai'/'all.py').read_text()
    assert all(f'from .{m} import *' in text for m in generated), generated
    assert not any(f'from .{m} import' in text for m in EDGES), "an edge module in all.py"

def test_no_library_module_imports_an_edge():
    "The library does not depend on its benchmark or command line"
    for p in (ROOT/'mixmo_fastai').glob('*.py'):
        if p.stem in EDGES + ('_modidx', '_console'): continue  # _console: the command line's entry point
        assert not re.search(r'from \.(bench|cli) import|import mixmo_fastai\.(bench|cli)|from mixmo_fastai\.(bench|cli)', p.read_text()), p.name

def test_readme_commands():
    readme = (ROOT/'README.md').read_text()
    assert 'pip install -e ".[dev]"' in readme and 'tools/test.sh' in readme
    assert 'mixmo-fastai train' in readme
    assert 'pyproject.toml' in readme and 'settings.ini' in readme
    ci = (ROOT/'.ci'/'run').read_text()
    assert 'tools/test.sh' in ci

def test_readme_in_sync_with_index():
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'make_readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

def test_no_hard_coded_half():
    "dtype safety: the earlier package called `.half()`; none of our code may"
    for p in (ROOT/'mixmo_fastai').glob('*.py'):
        assert '.half()' not in p.read_text(), p

def test_no_class_over_100_lines():
    "Classes near fastai's size (STYLE.md): none of the package's classes is longer than 100 lines"
    import ast
    long = [(f.name, n.name, n.end_lineno - n.lineno + 1) for f in sorted((ROOT/'mixmo_fastai').glob('*.py'))
            for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.ClassDef) and n.end_lineno - n.lineno + 1 > 100]
    assert not long, long
