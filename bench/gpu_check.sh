#!/usr/bin/env bash
# GPU check, ready to run on a CUDA machine (under 5 minutes): the CUDA tests (fp16 with loss
# scaling, bf16, channels_last, pinned memory), finetune's Trainer against a plain loop on
# resnet50 at 224 px (bf16 and fp16), and a 2-GPU nccl run when two GPUs exist.
#   bash bench/gpu_check.sh            (uses $FINETUNE_VENV or ~/.cache/finetune-venv)
# Put its numbers in docs/training.md ("Speed"). Not run in this project so far: no GPU was lent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${FINETUNE_VENV:-$HOME/.cache/finetune-venv}/bin/python"
export HF_HUB_OFFLINE=1
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.cuda.get_device_name(0), torch.version.cuda, 'GPUs:', torch.cuda.device_count())"
echo "== CUDA tests"
"$PY" -m pytest -q -p no:cacheprovider tests/train/test_runtime.py tests/train/test_trainer.py \
    -k "cuda or precision"
echo "== Trainer vs hand-written loop, resnet50 at 224 px"
for precision in bf16 fp16; do
  "$PY" bench/throughput.py --models resnet50 --img-size 224 --batch-size 64 --steps 20 \
      --repeats 3 --device cuda --precision "$precision"
done
if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  echo "== 2 GPUs, nccl"
  tmp="$(mktemp -d)"
  "$PY" -c "
import sys; sys.path.insert(0, 'tests')
from conftest import make_folder; make_folder(__import__('pathlib').Path('$tmp/data'), n=32)"
  "$PY" -m torch.distributed.run --nproc-per-node 2 --standalone -m finetune run \
      --data "$tmp/data" --backbone resnet50 --no-pretrained --epochs 2 --img-size 224 \
      --batch-size 32 --device cuda --output "$tmp/run"
fi
echo "gpu check done"
