#!/usr/bin/env bash
# The pure-Python wheels that tools/gpu_check.py needs on a GPU machine that has PyTorch, torchvision, timm,
# pandas and scikit-learn but no fastai and no package index: downloaded here into .whl/ (ignored by git),
# installed there without an index:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
# fastprogress is pinned to 1.0.3, the last release that does not import python-fasthtml (whose dependencies
# include compiled wheels); fastai accepts it (fastprogress>=0.2.4). spacy, which fastai lists, is only imported
# by fastai.text.
# PYVER=3.11 DEST=/tmp/whl311 bash tools/gpu_wheels.sh: the same set for another Python (a rehearsal on this machine)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${DEST:-.whl}
mkdir -p "$dest"
# the GPU image's Python is 3.12 on x86-64 (plum-dispatch ships compiled wheels per Python version)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dest" \
  fastai==2.8.12 fastcore==2.2.41 fastprogress==1.0.3 fastdownload==0.0.8 fasttransform==0.0.5 \
  plum-dispatch==2.9.0 beartype==0.23.1
ls "$dest"
