"""Execute the notebooks in place so that the documentation keeps their outputs (plots, small tables), then `nbdev-clean` them.

    python tools/run_docs_nbs.py                  # every notebook of nbs/
    python tools/run_docs_nbs.py nbs/40_metrics.ipynb nbs/45_bench.ipynb
    python tools/run_docs_nbs.py --slow nbs/91_demo_mixmo.ipynb   # the `#| slow` cells too (the demos' long runs)

Cells flagged with one of `[tool.nbdev] tst_flags` (`#| slow`, `#| notest`; with `--slow`, `#| notest` only) and cells
with `#| eval: false` are not run: they keep the outputs they had. Each notebook runs in a fresh process; a notebook that fails is left
unchanged and the script exits non-zero. Plots are saved as plain PNG (not retina), progress
bars and warnings of the libraries underneath are dropped (see `keep_output`), and the usual `nbdev-clean`
removes execution counts and metadata.
"""
import argparse, os, re, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

root = Path(__file__).resolve().parent.parent
# `where:123: SomeWarning: message` (maybe on several lines) and the source line that Python prints under it
_warning_re = re.compile(r'^(\S+|<[^>]+>):\d+: (\w*Warning: .*\n(?:(?!  |\S+:\d+: ).*\n)*)(?:  .*\n)?', re.M)

def _warning(m):
    "A library's warning is dropped; this package's own (they document behaviour) lose where they were raised"
    where = m[1]
    return '' if where.endswith('.py') and '/mixmo_fastai/' not in where else m[2]

def _clean_stream(o):
    "The text of a stream output without fastprogress's console bars (carriage-return redraws) nor library warnings"
    text = ''.join(o['text'])
    lines = [l.rsplit('\r', 1)[-1] for l in text.split('\n')]  # a redrawn line keeps its last state
    text = '\n'.join(l for l in lines if not re.match(r'^\s*(Epoch \d+/\d+ : )?\|[█-]*\| *\d+\.\d+% \[', l))
    if o['name'] == 'stderr': text = _warning_re.sub(_warning, text)
    return text.lstrip('\n') if text.strip() else ''

def keep_output(o)->bool:
    "Clean `o` in place; `False` when nothing worth showing is left"
    if o['output_type'] == 'stream':
        o['text'] = _clean_stream(o)
        return bool(o['text'])
    return True

def run_nb(fn:Path, skip_flags, timeout):
    from fastcore.foundation import working_directory
    from fastcore.nbio import write_nb
    from execnb.shell import CaptureShell
    from nbdev.process import NBProcessor
    from nbdev.config import get_config
    nb = NBProcessor(fn, rm_directives=False, process=True).nb
    def _skip(cell):
        if cell.cell_type != 'code': return True
        d = cell.directives_
        return str(d.get('eval', 'true')).lower() == 'false' or bool(set(skip_flags) & d.keys())
    shell = CaptureShell(fn, mpl_format='png', profile=bool(get_config().exec_profile))
    with working_directory(fn.parent): shell.run_all(nb, exc_stop=True, preproc=_skip, cell_timeout=timeout)
    for cell in nb.cells:
        if cell.cell_type == 'code' and not _skip(cell): cell['outputs'] = [o for o in cell.get('outputs', []) if keep_output(o)]
    write_nb(nb, fn)

def _run_one(fn, slow=False):
    "Run `fn` in a fresh interpreter (notebooks start DataLoader workers, which a pool's daemon process cannot)"
    t = time.time()
    res = subprocess.run([sys.executable, __file__, '--one', str(fn)] + ['--slow'] * slow, capture_output=True, text=True)
    return fn, time.time()-t, (res.stderr.strip().splitlines() or ['exit status %d' % res.returncode])[-1] if res.returncode else None

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('nbs', nargs='*', help='notebooks to run (default: every notebook of nbs/)')
    p.add_argument('--n-workers', type=int, default=1, help='notebooks run at once, each in its own process')
    p.add_argument('--slow', action='store_true', help="run the `#| slow` cells too, without the cells' time limit")
    p.add_argument('--one', help=argparse.SUPPRESS)  # the child process: run this notebook and write it back
    args = p.parse_args()
    os.chdir(root)
    os.environ.setdefault('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
    from nbdev.config import get_config
    cfg = get_config()
    if args.one:
        flags = [f for f in str(cfg.get('tst_flags', '')).split() if not (args.slow and f == 'slow')]
        return run_nb(Path(args.one), flags, None if args.slow else int(cfg.get('cell_timeout', 600)))
    from nbdev.clean import nbdev_clean
    fns = [Path(f).resolve() for f in args.nbs] or sorted(cfg.nbs_path.glob('[!_.]*.ipynb'))
    start, failed = time.time(), []
    with ThreadPoolExecutor(args.n_workers) as ex:
        for fn, secs, err in ex.map(lambda f: _run_one(f, args.slow), fns):
            print(f'{fn.relative_to(root)}: {secs:.0f}s' + (f'  FAILED, left unchanged: {err}' if err else ''), flush=True)
            if err: failed.append(fn)
            else: nbdev_clean.__wrapped__(fname=str(fn))
    print(f'{len(fns)-len(failed)} of {len(fns)} notebooks run in {time.time()-start:.0f}s')
    if failed: sys.exit(1)

if __name__ == '__main__': main()
