#!/usr/bin/env bash
# Install finetune and run the built-in demo: ImageNet EfficientNet-Lite2 fine-tuned on real
# solar-cell images (elpv), then predictions on held-out images. About 3-4 minutes on 2 CPU cores.
set -euo pipefail
BIN="$(EXTRAS=demo bash "$(dirname "$0")/setup.sh" | tail -n 1)"
cd "$(dirname "$0")/.."
exec "$BIN/finetune" demo "$@"
