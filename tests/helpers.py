"Helpers the test modules import (`from helpers import ...`); pytest's own hooks and fixtures stay in conftest.py"
import subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent

def run_cli(*args, timeout=600):
    "Run the installed `mixmo-fastai` console script (falls back to `python -m`)"
    exe = Path(sys.executable).with_name('mixmo-fastai')
    cmd = [str(exe), *args] if exe.exists() else [sys.executable, '-m', 'mixmo_fastai._console', *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)

def subset_dls(n_train, n_valid=64, bs=64, **kwargs):
    "The digits `DataLoaders` restricted to the first `n_train`/`n_valid` items of the fixed split (fast tests)"
    from fastai.data.transforms import IndexSplitter
    from mixmo_fastai.data import digits_block, digits_split
    dblock = digits_block(**kwargs)
    train, valid = digits_split()
    items = train[:n_train] + valid[:n_valid]
    dblock.get_items = lambda _: items
    dblock.splitter = IndexSplitter(list(range(n_train, n_train + n_valid)))
    return dblock.dataloaders(None, bs=bs, device='cpu', num_workers=0)

def xfail(reason:str):
    "A known defect, reported to its owner: strict, so a fix (an XPASS) fails the run until the mark is removed"
    return pytest.mark.xfail(strict=True, reason=reason)

def known_defect_cases(values, known:dict, ids=None, sep='-'):
    "`values` as pytest params (ids joined with `sep`), the ids in `known` (id -> reason) marked `xfail`"
    ids = ids or [v if isinstance(v, str) else sep.join(map(str, v)) for v in values]
    return [pytest.param(*(v if isinstance(v, tuple) else (v,)), id=i, marks=[xfail(known[i])] if i in known else [])
            for v, i in zip(values, ids)]
