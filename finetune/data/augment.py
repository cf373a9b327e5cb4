"""Train/eval transforms built from the backbone's own preprocessing (timm ``create_transform``).

Training, set by ``DataConfig`` (the defaults are timm's ImageNet recipe): rotation by up to
``rotate`` degrees and the 8 dihedral transforms (``dihedral``, for images with no natural
orientation: satellite tiles, slides), then timm's random resized crop (area from
``min_crop_scale``), flips, colour jitter (``color_jitter``, ``hue_jitter``) or an automatic
policy (``auto_augment``: a timm string such as ``rand-m9-mstd0.5-inc1`` for RandAugment, or
``trivialaugment`` for torchvision's TrivialAugmentWide), and random erasing (``random_erasing``).
Evaluation: resize to ``img_size / crop_pct`` then center crop, exactly as the pretrained weights
were evaluated. Mean, std and interpolation always come from the backbone.

Example:
    >>> train_tf = build_transform(info, DataConfig(img_size=128), training=True)  # doctest: +SKIP
"""

from __future__ import annotations

import random
from typing import Optional

from PIL import Image

from ..autoconfig import resolve_augment
from ..config import DataConfig, TrainConfig
from ..models.info import BackboneInfo

__all__ = [
    "build_transform",
    "build_band_transform",
    "build_eval_transform",
    "resolve_img_size",
    "RandomDihedral",
]


def resolve_img_size(info: BackboneInfo, img_size: Optional[int]) -> int:
    """The square input size in pixels: ``img_size`` if given, else the pretrained one."""
    return int(img_size) if img_size else int(info.input_size[-1])


class RandomDihedral:
    """One of the 8 symmetries of the square (4 rotations x optional mirror), uniformly."""

    OPS = (
        None,
        Image.Transpose.ROTATE_90,
        Image.Transpose.ROTATE_180,
        Image.Transpose.ROTATE_270,
        Image.Transpose.FLIP_LEFT_RIGHT,
        Image.Transpose.FLIP_TOP_BOTTOM,
        Image.Transpose.TRANSPOSE,
        Image.Transpose.TRANSVERSE,
    )

    def __call__(self, img: Image.Image) -> Image.Image:
        op = random.choice(self.OPS)
        return img if op is None else img.transpose(op)

    def __repr__(self) -> str:
        return "RandomDihedral()"


def build_transform(
    info: BackboneInfo, data: Optional[DataConfig] = None, *, training: bool, uint8: bool = False
):
    """The train or eval transform for ``info``'s preprocessing and ``data``'s augmentation.

    ``uint8=True`` (training only) ends in a uint8 tensor instead of a normalised float one; the
    Trainer normalises whole batches on the device (timm's prefetcher split), which saves
    ~0.2 ms per image on the CPU. Random erasing needs normalised tensors, so it keeps floats.
    """
    from timm.data import create_transform
    from torchvision import transforms as T

    # a run resolves "auto" strengths from its length first (finetune.autoconfig); a bare
    # DataConfig here gets the default run length's
    data = resolve_augment(data or DataConfig(), epochs=TrainConfig().epochs)
    size = resolve_img_size(info, data.img_size)
    common = dict(
        input_size=(3, size, size),
        interpolation=info.interpolation,
        mean=info.mean,
        std=info.std,
        crop_pct=info.crop_pct,
        crop_mode="center",
    )
    if not training:
        return create_transform(is_training=False, **common)
    trivial = data.auto_augment == "trivialaugment"
    jitter = (data.color_jitter,) * 3 + ((data.hue_jitter,) if data.hue_jitter else ())
    tf = create_transform(
        is_training=True,
        scale=(data.min_crop_scale, 1.0),
        hflip=data.hflip,
        vflip=data.vflip,
        color_jitter=None if trivial or not (data.color_jitter or data.hue_jitter) else jitter,
        auto_augment=None if trivial else data.auto_augment,
        re_prob=data.random_erasing,
        use_prefetcher=uint8 and not data.random_erasing,
        **common,
    )
    steps = list(tf.transforms)
    if trivial:  # after crop and flips, before the tensor conversion, as in torchvision
        at = next(i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__)
        steps.insert(at, T.TrivialAugmentWide())
    front = []
    if data.rotate:
        front.append(T.RandomRotation(data.rotate, interpolation=T.InterpolationMode.BILINEAR))
    if data.dihedral:
        front.append(RandomDihedral())
    return T.Compose(front + steps)


class _TensorDihedral:
    """``RandomDihedral`` for (C, H, W) tensors of any band count."""

    def __call__(self, x):
        import torch

        x = torch.rot90(x, random.randrange(4), dims=(-2, -1))
        return x.flip(-1) if random.random() < 0.5 else x


def build_band_transform(info: BackboneInfo, data: DataConfig, *, training: bool):
    """Transforms for multi-band float tensors (``data.in_chans``): crop, flips, dihedral and
    rotation as for RGB (no colour jitter: band statistics carry the signal), then per-band
    normalisation with the pretrained mean/std repeated over the bands."""
    from torchvision.transforms import v2

    data = resolve_augment(data, epochs=TrainConfig().epochs)
    size = resolve_img_size(info, data.img_size)
    norm = v2.Normalize(list(info.mean), list(info.std))
    if not training:
        return v2.Compose(
            [v2.Resize(int(size / info.crop_pct), antialias=True), v2.CenterCrop(size), norm]
        )
    steps = []
    if data.rotate:
        steps.append(v2.RandomRotation(data.rotate))
    if data.dihedral:
        steps.append(_TensorDihedral())
    steps += [
        v2.RandomResizedCrop(size, scale=(data.min_crop_scale, 1.0), antialias=True),
        v2.RandomHorizontalFlip(data.hflip),
        v2.RandomVerticalFlip(data.vflip),
        norm,
    ]
    return v2.Compose(steps)


def build_eval_transform(info: BackboneInfo, data: DataConfig):
    """The evaluation transform a run used: RGB (``build_transform``) or multi-band
    (``build_band_transform``) by ``data.in_chans``. ``predict`` and ``evaluate`` use it too."""
    if data.in_chans not in (None, 3):
        return build_band_transform(info, data, training=False)
    return build_transform(info, data, training=False)
