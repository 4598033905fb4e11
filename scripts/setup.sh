#!/usr/bin/env bash
# Create .venv with vadasm installed (editable) for CPU use. Extras: pass them as arguments,
# e.g. `bash scripts/setup.sh dev,testbed`. Installs the CPU build of torch first so pip does
# not pull ~3 GB of CUDA libraries (on a GPU machine, install your CUDA torch before this).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q "torch==2.13.0" || .venv/bin/pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
.venv/bin/pip install -q -e ".[${extras}]"
echo "vadasm installed in .venv ($(.venv/bin/vadasm --help >/dev/null && echo ok))"
