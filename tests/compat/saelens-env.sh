#!/usr/bin/env bash
# Make (or reuse) SAELens' own environment in $1 for `make saelens-compat`: CPU torch, then sae-lens from PyPI.
# Exit 0: ready. Exit 2: PyPI cannot be reached (the caller prints the SKIPPED banner). Anything else: a real failure.
set -uo pipefail
venv=$1
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import sae_lens' 2>/dev/null; then exit 0; fi
if ! python3 -c 'import urllib.request; urllib.request.urlopen("https://pypi.org/simple/sae-lens/", timeout=20)' \
    2>/dev/null; then
  exit 2
fi
python3 -m venv "$venv" || exit 1
# torch first, pinned like .venv's, so that sae-lens does not pull a CUDA build.
"$venv/bin/pip" install -q "${TORCH_PIN:-torch==2.13.0}" || exit 1
"$venv/bin/pip" install -q 'sae-lens>=6.54,<7' || exit 1
