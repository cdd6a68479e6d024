#!/usr/bin/env bash
# Headless Chromium for the docs check (tools/check_docs.py), from Debian's/Ubuntu's package `chromium`: installed
# when no Chromium is on PATH (as root, or with sudo), as tools/get_data.sh installs the data.
set -euo pipefail
for name in chromium chromium-browser google-chrome chrome chromium-headless-shell; do
  if command -v "$name" >/dev/null; then exit 0; fi
done
if ! command -v apt-get >/dev/null; then
  echo "no Chromium on PATH and this machine has no apt-get: install Chromium (the docs check opens every page in it)" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
echo "== installing Debian's chromium (the docs check opens every page in headless Chromium)"
$sudo apt-get update -q >/dev/null
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
