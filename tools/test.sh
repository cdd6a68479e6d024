#!/usr/bin/env bash
# Every test of the project: the real data they read (Fashion-MNIST) and the browser of the docs check (Chromium), both
# installed when missing; notebooks and generated modules in sync, the notebooks' own tests, the docs site built and
# looked at in headless Chromium, then pytest.
# Run from the repository root with the project's environment on PATH (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
export MPLBACKEND=Agg
bash tools/get_data.sh
bash tools/get_chromium.sh
before=$(git status --porcelain --untracked-files=no | sort)
nbdev-export
python tools/make_readme.py
after=$(git status --porcelain --untracked-files=no | sort)
if [ "$before" != "$after" ]; then
  echo "nbdev-export / make_readme changed tracked files: notebooks and generated files are out of sync:"
  git status --short --untracked-files=no
  exit 1
fi
echo "== nbdev-test"
nbdev-test --n-workers "${NBDEV_WORKERS:-2}" --timing
echo "== docs"
python tools/build_docs.py
python tools/check_docs.py
echo "== pytest"
python -m pytest -q -rs tests
