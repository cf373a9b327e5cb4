"""Train/eval transforms built from the backbone's own preprocessing (timm ``create_transform``).

Training: random resized crop, flips, colour jitter, set by ``DataConfig`` (defaults: timm's
ImageNet recipe: crop scale 0.08-1, horizontal flip, jitter 0.4).
Evaluation: resize to ``img_size / crop_pct`` then center crop, exactly as the pretrained weights
were evaluated. Mean, std and interpolation always come from the backbone.

Example:
    >>> train_tf = build_transform(info, DataConfig(img_size=128), training=True)  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Optional

from .backbones import BackboneInfo
from .config import DataConfig

__all__ = ["build_transform", "resolve_img_size"]


def resolve_img_size(info: BackboneInfo, img_size: Optional[int]) -> int:
    """The square input size in pixels: ``img_size`` if given, else the pretrained one."""
    return int(img_size) if img_size else int(info.input_size[-1])


def build_transform(info: BackboneInfo, data: Optional[DataConfig] = None, *, training: bool):
    """The train or eval transform for ``info``'s preprocessing and ``data``'s augmentation."""
    from timm.data import create_transform

    data = data or DataConfig()
    size = resolve_img_size(info, data.img_size)
    train_args = dict(scale=(data.min_crop_scale, 1.0), hflip=data.hflip, vflip=data.vflip,
                      color_jitter=data.color_jitter) if training else {}
    return create_transform(
        input_size=(3, size, size),
        is_training=training,
        **train_args,
        interpolation=info.interpolation,
        mean=info.mean,
        std=info.std,
        crop_pct=info.crop_pct,
        crop_mode="center",
    )
