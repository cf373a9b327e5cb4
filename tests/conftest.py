"""Shared fixtures: tiny synthetic image folders, CSV manifests and multi-band TIFFs in tmp_path,
quick test_resnet runs, offline hub, quiet threads."""

from __future__ import annotations

import csv
import json
import os
import tempfile  # noqa: E402
import zlib  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ["FINETUNE_CACHE"] = tempfile.mkdtemp(prefix="finetune-test-cache-")  # scan caches

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tifffile  # noqa: E402
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


def tiny_run(folder, **extra):
    """A quiet adapt() of a random-init test_resnet at 32 px, batch 4, 1 epoch, no warmup, no
    loader workers; keyword arguments override these (module-scoped fixtures call it too)."""
    import finetune

    base = dict(pretrained=False, epochs=1, img_size=32, batch_size=4, num_workers=0,
                warmup_epochs=0.0, verbose=False)  # fmt: skip
    return finetune.adapt("test_resnet", folder, **{**base, **extra})


@pytest.fixture
def run_resnet():
    """run_resnet(folder, **extra): ``tiny_run`` with 2 epochs."""
    return lambda folder, **extra: tiny_run(folder, **{"epochs": 2, **extra})


@pytest.fixture
def metrics_lines():
    """metrics_lines(result): the run's metrics.jsonl, one dict per line."""

    def lines(result):
        return [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]

    return lines


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def write_csv():
    """write_csv(path, header, rows) -> path: a CSV manifest, header row first."""
    return _write_csv


@pytest.fixture
def multi_csv(tmp_path):
    """tmp/multi.csv over tmp/img/*.png: a multi-label manifest (labels bright, cool, warm)."""
    # red images carry "warm", green "cool", and every third image also "bright"
    rows = []
    for i in range(18):
        colour = "cat" if i % 2 else "dog"
        make_image(tmp_path / "img" / f"{i}.png", COLOURS[colour], seed=i)
        labels = ["warm" if colour == "cat" else "cool"] + (["bright"] if i % 3 == 0 else [])
        rows.append((f"img/{i}.png", ";".join(labels)))
    rows.append(("img/0.png", "No Finding"))  # an image without labels is allowed
    return _write_csv(tmp_path / "multi.csv", ["path", "labels"], rows)


def _write_tiles(root, bands=13, n=5, bands_first=False):
    rng = np.random.default_rng(0)
    for c, level in (("forest", 9000), ("water", 30000)):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = np.clip(rng.normal(level, 3000, (24, 24, bands)), 0, 65535).astype(np.uint16)
            if bands_first:  # planar: one plane per band
                tifffile.imwrite(
                    root / c / f"{i}.tif",
                    np.moveaxis(arr, -1, 0),
                    photometric="minisblack",
                    planarconfig="separate",
                )
            else:  # pixel-interleaved samples
                tifffile.imwrite(
                    root / c / f"{i}.tif", arr, photometric="minisblack", planarconfig="contig"
                )
    return root


@pytest.fixture
def make_tiles():
    """make_tiles(root, bands=13, n=5, bands_first=False) -> root: 24x24 uint16 multi-band TIFF
    tiles (satellite-like) in root/forest and root/water."""
    return _write_tiles
