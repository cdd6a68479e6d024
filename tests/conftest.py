"pytest's hooks and fixtures; what the test modules import is in helpers.py"
import os
os.environ.setdefault('MPLBACKEND', 'Agg')
import pytest
from helpers import run_cli

@pytest.fixture
def cli(): return run_cli

def pytest_pycollect_makeitem(collector, name, obj):
    "`from fastai... import *` brings fastcore's `test_eq`/`test_fail` helpers into test modules: they are not tests"
    if callable(obj) and (getattr(obj, '__module__', '') or '').startswith(('fastcore', 'fastai')): return []
