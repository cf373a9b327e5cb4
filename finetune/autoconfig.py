"""Defaults chosen from the run: the config fields left ``None`` ("auto") get a value here, each
with the reason printed at the start of the run and recorded in ``config.json``.

The rules are for fine-tuning a pretrained backbone, not for training from scratch:

- augmentation strength follows the run length in epochs (with ``--budget`` the planned
  length). ImageNet's random resized crop down to 8 % of the area and colour jitter 0.4 are tuned
  for 300-epoch training from scratch; in a short fine-tune they make most training images
  harder than the test images and the run underfits (issue 9: train accuracy 0.66 after 3
  epochs). Short runs get fastai's fine-tuning strength (crops keep >= 80 % of the image, as
  fastai's fine-tuning examples use ``min_scale=0.75``; mild lighting), longer runs move toward
  ImageNet's as there are epochs to learn the invariances. Crops keeping >= 80 % against >= 50 %,
  5 elpv seeds and 3 each of digits and Fashion-MNIST at 4-13 epochs: +0.5, +0.4 and +1.6 points
  test accuracy on average (bench/transfer.py --methods finetune; noisy per seed, -1.8 to +3.6).
  An epoch count already folds in the data set's size: under a budget a small set gets many
  epochs, a large one few.
- warmup is 5 % of the run in optimizer steps, at most one epoch: enough to settle AdamW's
  moment estimates and BatchNorm statistics, not a whole epoch of a 3-epoch run.
- the peak LR depends on the optimizer and the architecture: AdamW 2e-3 for CNNs (fastai's
  ``fine_tune`` base LR; with an LP-FT head it measured 0.974 test accuracy on digits against
  0.948 at 1e-3, and the same within noise on elpv), 5e-4 for transformers, whose fine-tunes
  want smaller steps (no BatchNorm to re-centre them); SGD 10x AdamW's.

Example:
    >>> cfg, reasons = resolve_auto(FinetuneConfig(), epochs=6)
    >>> cfg.data.min_crop_scale, cfg.data.color_jitter, cfg.optim.warmup_epochs
    (0.8, 0.1, 0.3)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from .config import DataConfig, FinetuneConfig

__all__ = [
    "AUGMENT_LEVELS",
    "augment_level",
    "auto_lr",
    "resolve_auto",
    "resolve_augment",
    "warmup_for",
]

# (longest run in epochs, min crop scale, colour jitter, name), first match wins
AUGMENT_LEVELS: tuple[tuple[Optional[int], float, float, str], ...] = (
    (10, 0.8, 0.1, "light"),
    (40, 0.5, 0.2, "medium"),
    (None, 0.08, 0.4, "ImageNet"),
)
WARMUP_FRACTION = 0.05  # of the run's optimizer steps


def augment_level(epochs: int) -> tuple[float, float, str]:
    """(min crop scale, colour jitter, name) for a run of ``epochs`` epochs."""
    for longest, crop, jitter, name in AUGMENT_LEVELS:
        if longest is None or epochs <= longest:
            return crop, jitter, name
    raise AssertionError("the last level has no limit")


def warmup_for(epochs: int) -> float:
    """Warmup length in epochs: 5 % of the run, at most one epoch."""
    return round(min(1.0, WARMUP_FRACTION * epochs), 4)


def auto_lr(optimizer: str, *, cnn: bool) -> float:
    """The peak LR for ``optimizer`` on a CNN or a transformer (see the module docstring)."""
    adamw = 2e-3 if cnn else 5e-4
    return adamw * (10 if optimizer == "sgd" else 1)


def resolve_augment(data: DataConfig, *, epochs: int) -> DataConfig:
    """``data`` with ``min_crop_scale``/``color_jitter`` filled in when they are None."""
    crop, jitter, _ = augment_level(epochs)
    return replace(
        data,
        min_crop_scale=crop if data.min_crop_scale is None else data.min_crop_scale,
        color_jitter=jitter if data.color_jitter is None else data.color_jitter,
    )


def resolve_auto(
    cfg: FinetuneConfig,
    *,
    epochs: Optional[int] = None,
    n_train: Optional[int] = None,
    cnn: bool = True,
) -> tuple[FinetuneConfig, tuple[str, ...]]:
    """``cfg`` with every "auto" (None) field of augmentation, warmup and LR given a value for a
    run of ``epochs`` epochs (default ``train.epochs``) over ``n_train`` images of a CNN (or a
    transformer), and the reasons."""
    epochs = epochs or cfg.train.epochs
    # "8 epochs", not "a 8-epoch run": no article to get wrong for 8, 11, 18, 80...
    over = f"{epochs} epoch{'s' if epochs != 1 else ''}" + (
        f" over {n_train:,} images" if n_train else ""
    )
    reasons = []
    data = cfg.data
    if data.min_crop_scale is None or data.color_jitter is None:
        crop, jitter, name = augment_level(epochs)
        data = resolve_augment(data, epochs=epochs)
        reasons.append(
            f"augmentation {name} (crops keep >= {data.min_crop_scale:.0%} of the area, colour "
            f"jitter {data.color_jitter:g}): {over}"
        )
    optim = cfg.optim
    if optim.lr is None:
        optim = replace(optim, lr=auto_lr(optim.optimizer, cnn=cnn))
        kind = "a CNN" if cnn else "a transformer"
        reasons.append(f"lr {optim.lr:g}: {optim.optimizer} on {kind}")
    if optim.warmup_epochs is None:
        optim = replace(optim, warmup_epochs=warmup_for(epochs))
        reasons.append(f"warmup {optim.warmup_epochs:g} epochs: 5 % of {over}, at most 1 epoch")
    return replace(cfg, data=data, optim=optim), tuple(reasons)
