"""``finetune augment-preview``: see what a recipe's augmentation does to your images.

Example:
    >>> augment_preview("my_images", recipe="remote-sensing", output="aug.png")  # doctest: +SKIP
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

import torch

from .._io import atomic_path
from ..config import FinetuneConfig
from ..data.augment import build_transform
from ..data.folder import scan_folder
from ..data.images import load_image
from ..models.backbones import load_backbone

__all__ = ["augment_preview"]


def augment_preview(
    data: str | Path,
    *,
    recipe: Optional[str] = None,
    backbone: Optional[str] = None,
    img_size: Optional[int] = None,
    images: int = 4,
    samples: int = 6,
    output: str | Path = "augment-preview.png",
    seed: int = 0,
) -> Path:
    """Write a grid (rows: images; columns: eval view, then ``samples`` training views)."""
    from torchvision.utils import save_image

    overrides = {k: v for k, v in (("name", backbone), ("img_size", img_size)) if v is not None}
    cfg = FinetuneConfig.resolve(recipe=recipe, **overrides)
    _, info = load_backbone(cfg.backbone.name, pretrained=False, img_size=cfg.data.img_size)
    train_tf = build_transform(info, cfg.data, training=True)
    eval_tf = build_transform(info, cfg.data, training=False)
    scanned = scan_folder(data, val_split=0.0, seed=seed)
    rng = random.Random(seed)
    picks = rng.sample(list(scanned.train), min(images, len(scanned.train)))
    random.seed(seed)
    torch.manual_seed(seed)
    mean = torch.tensor(info.mean).view(3, 1, 1)
    std = torch.tensor(info.std).view(3, 1, 1)
    tiles = []
    for path, _ in picks:
        img = load_image(path)
        tiles.append(eval_tf(img))
        tiles += [train_tf(img) for _ in range(samples)]
    grid = torch.stack([(t * std + mean).clamp(0, 1) for t in tiles])
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        save_image(grid, tmp, nrow=samples + 1, padding=4, pad_value=1.0, format="png")
    return output
