#!/usr/bin/env bash
# Install finetune with its test extras, check the code's shape (ruff lint and format, the
# import-linter layers contract) and run the whole test suite (offline, CPU).
set -euo pipefail
BIN="$(EXTRAS=test bash "$(dirname "$0")/setup.sh" | tail -n 1)"
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
"$BIN/ruff" check .
"$BIN/ruff" format --check .
"$BIN/lint-imports"
exec "$BIN/python" -m pytest -q --durations=10 "$@"
