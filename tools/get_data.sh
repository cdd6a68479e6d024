#!/usr/bin/env bash
# Fashion-MNIST's four idx files for the tests and the benchmark, from Debian's/Ubuntu's package
# dataset-fashion-mnist (30 MB, /usr/share/datasets/fashion-mnist): installed when missing (as root, or with sudo).
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ] && [ -f "$dir/t10k-labels-idx1-ubyte.gz" ]; then exit 0; fi
if ! command -v apt-get >/dev/null; then
  echo "Fashion-MNIST is not in $dir and this machine has no apt-get: put the four idx files there" \
       "(or pass path= to fashion_mnist_dls), see the README's 'Real data' section" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
echo "== installing Debian's dataset-fashion-mnist (the tests read the real Fashion-MNIST)"
$sudo apt-get update -q >/dev/null
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null
