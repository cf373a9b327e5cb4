#!/usr/bin/env bash
# Install finetune with its test extras and run the whole test suite (offline, CPU).
set -euo pipefail
BIN="$(EXTRAS=test bash "$(dirname "$0")/setup.sh" | tail -n 1)"
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
exec "$BIN/python" -m pytest -q --durations=10 "$@"
