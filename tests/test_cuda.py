"""Issue 5: CUDA mixed precision. Runs where a GPU exists; skips cleanly everywhere else."""

import pytest
import torch

import finetune

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16", "auto"])
def test_cuda_precisions_train_and_save(image_folder, fast_overrides, precision):
    result = finetune.adapt(
        "test_resnet",
        image_folder,
        verbose=False,
        device="cuda",
        precision=precision,
        **fast_overrides,
    )
    assert next(result.model.parameters()).is_cuda
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    records = finetune.predict(result.run_dir, [image_folder / "cat"], device="cuda")
    assert len(records) == 6


@cuda
def test_auto_picks_bf16_or_fp16_on_cuda():
    from finetune.train.runtime import resolve_precision

    assert resolve_precision("auto", torch.device("cuda")) in ("bf16", "fp16")
