"""Shared fixtures: tiny synthetic image folders in tmp_path, offline hub, quiet threads."""

from __future__ import annotations

import os
import tempfile  # noqa: E402
import zlib  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ["FINETUNE_CACHE"] = tempfile.mkdtemp(prefix="finetune-test-cache-")  # scan caches

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

# Class-dependent colours so that a tiny model can learn the task in a few steps.
COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}


def make_image(path: Path, colour, size=(40, 32), seed=0, mode="RGB") -> Path:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour)[None, None] + rng.normal(0, 25, (*size[::-1], 3)), 0, 255)
    img = Image.fromarray(arr.astype(np.uint8))
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def make_folder(root: Path, classes=("cat", "dog"), n=6, split=None, ext=".png") -> Path:
    for c in classes:
        for i in range(n):
            base = root / split / c if split else root / c
            # a distinct, reproducible seed per file (hash() of str is salted per process, and
            # two equal images in different splits are duplicates the scan reports)
            make_image(
                base / f"{c}{i}{ext}", COLOURS[c], seed=zlib.crc32(f"{c}/{i}/{split}".encode())
            )
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """tmp/data/<class>/*.png, 2 classes x 6 images."""
    return make_folder(tmp_path / "data")


@pytest.fixture
def split_folder(tmp_path) -> Path:
    """tmp/split/{train,val,test}/<class>/*.png."""
    root = tmp_path / "split"
    make_folder(root, n=6, split="train")
    make_folder(root, n=2, split="val")
    make_folder(root, n=2, split="test")
    return root


@pytest.fixture
def fast_overrides(tmp_path) -> dict:
    """adapt() overrides for a 1-epoch run of a random-init timm test model at 32 px."""
    return dict(
        pretrained=False,
        epochs=1,
        img_size=32,
        batch_size=4,
        num_workers=0,
        output=str(tmp_path / "run"),
        warmup_epochs=0.0,
    )
