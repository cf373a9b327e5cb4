"""The real image data sets of bench/transfer.py, written once as PNG image folders.

Each set becomes ``ROOT/<name>/{train,val,test}/<class>/*.png`` with a fixed, seeded, stratified
split (70/15/15 per class, the demo's convention), so every method of the bench (and a user
typing ``finetune run --data ROOT/<name>``) reads the same files. Nothing is downloaded: the
images come from installed packages (PyPI, and Debian for Fashion-MNIST).

- ``elpv``: the ``elpv-dataset`` package, 2,624 300x300 grayscale electroluminescence images of
  solar cells; defective when the labelled defect probability is >= 0.5 (as the demo), resized
  to 128x128 (the demo trains at 128 px).
- ``digits``: scikit-learn's bundled handwritten digits (``load_digits``), 1,797 8x8 grayscale
  images with 17 grey levels, 10 classes; written at their native 8x8.
- ``fashion``: Fashion-MNIST (Xiao et al. 2017) from the Debian package
  ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``: IDX files in
  /usr/share/datasets/fashion-mnist/), read with gzip and numpy: a seeded subset of the
  official training file, 200 images per class (2,000: 1,400/300/300 after the split), 28x28
  grayscale, 10 classes named as the data set's README names them ("T-shirt/top" becomes the
  folder ``T-shirt-top``: a class name is a folder name); written at their native 28x28.
- ``lfw``: scikit-image's bundled ``data.lfw_subset()``, 200 25x25 grayscale crops, the first
  100 faces and the other 100 non-faces; written at their native 25x25. Not a default of the
  bench: its 30 test images are saturated (every method scores 97-100 %, one image is 3.3
  points), so it cannot separate methods; ``--datasets lfw`` still runs it.

A folder is reused while its marker file matches the recipe that wrote it (name, subsample,
split seed); otherwise it is written again, into a temporary folder renamed into place.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Callable, Optional

import numpy as np

DATASETS = ("elpv", "digits", "fashion", "lfw")  # every set --datasets accepts
DEFAULT_DATASETS = ("elpv", "digits", "fashion")  # lfw is saturated (module docstring)
SPLIT_FRACTIONS = {"val": 0.15, "test": 0.15}  # the rest trains; per class, as the demo
ELPV_SIDE = 128  # px, the demo's training size
MARKER = ".finetune-bench"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FASHION_PER_CLASS = 200  # of the 6,000 per class in the training file: 1,400/300/300 in all
FASHION_SUBSET_SEED = 0
# the labels 0-9 in the order of the data set's README
FASHION_CLASSES = ("T-shirt-top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")  # fmt: skip


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "finetune-bench"


def load_elpv() -> tuple[list[Callable[[], np.ndarray]], list[str]]:
    """Lazy image loaders (2,624 decodes happen only when the folder is written) and labels."""
    from PIL import Image

    from finetune.tools.demo import elpv_labels

    def loader(path: Path) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            with Image.open(path) as im:
                small = im.convert("L").resize((ELPV_SIDE, ELPV_SIDE), Image.BICUBIC)
                return np.asarray(small)

        return load

    rows = elpv_labels()
    return [loader(p) for p, _ in rows], [label for _, label in rows]


def load_digits() -> tuple[list[np.ndarray], list[str]]:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    # grey levels 0..16 -> 0..255 (16 * 255 / 16 = 255 exactly)
    images = [np.round(img * 255 / 16).astype(np.uint8) for img in bunch.images]
    return images, [str(int(t)) for t in bunch.target]


def load_lfw() -> tuple[list[np.ndarray], list[str]]:
    from skimage.data import lfw_subset

    faces = lfw_subset()  # (200, 25, 25) floats in [0, 1]; the first 100 are faces
    images = [np.round(img * 255).astype(np.uint8) for img in faces]
    return images, ["face" if i < 100 else "non-face" for i in range(len(images))]


def _idx(path: Path, header: int) -> np.ndarray:
    import gzip

    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


def load_fashion() -> tuple[list[np.ndarray], list[str]]:
    """A seeded, stratified ``FASHION_PER_CLASS``-per-class subset of Fashion-MNIST's training
    file (IDX: a 16-byte header before the images, 8 before the labels)."""
    images_path = FASHION_DIR / "train-images-idx3-ubyte.gz"
    labels_path = FASHION_DIR / "train-labels-idx1-ubyte.gz"
    missing = [str(p) for p in (images_path, labels_path) if not p.is_file()]
    if missing:
        raise SystemExit(f"fashion: {', '.join(missing)} not found; install it with "
                         "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu)")  # fmt: skip
    labels = _idx(labels_path, 8)
    images = _idx(images_path, 16).reshape(len(labels), 28, 28)
    rng = np.random.default_rng(FASHION_SUBSET_SEED)
    keep = np.sort(np.concatenate([
        rng.choice(np.flatnonzero(labels == c), FASHION_PER_CLASS, replace=False)
        for c in range(len(FASHION_CLASSES))
    ]))  # fmt: skip
    return [images[i] for i in keep], [FASHION_CLASSES[labels[i]] for i in keep]


LOADERS = {"elpv": load_elpv, "digits": load_digits, "fashion": load_fashion, "lfw": load_lfw}
# what a set's folder holds beyond its name, in the marker: a change rewrites the folder
RECIPES = {"fashion": f"{FASHION_PER_CLASS} per class of the training file, seed "
                      f"{FASHION_SUBSET_SEED}"}  # fmt: skip


def split_indices(labels: list[str], *, seed: int, subsample: Optional[int] = None):
    """``{split: [(index, class), ...]}``: per class, shuffled with ``seed``, 15 % val, 15 % test,
    the rest train. ``subsample`` keeps that many images first, stratified by class."""
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    splits: dict[str, list[tuple[int, str]]] = {"train": [], "val": [], "test": []}
    for label in sorted(by_class):
        items = by_class[label]
        rng.shuffle(items)
        if subsample is not None:
            items = items[: max(3, round(len(items) * subsample / len(labels)))]
        n_val, n_test = (round(len(items) * SPLIT_FRACTIONS[s]) for s in ("val", "test"))
        splits["val"] += [(i, label) for i in items[:n_val]]
        splits["test"] += [(i, label) for i in items[n_val : n_val + n_test]]
        splits["train"] += [(i, label) for i in items[n_val + n_test :]]
    return splits


def prepare(
    name: str, root: Optional[Path] = None, *, seed: int = 0, subsample: Optional[int] = None
) -> Path:
    """Write data set ``name`` as a train/val/test image folder (once); return its path."""
    from PIL import Image

    root = Path(root) if root else default_cache()
    folder = root / (name if subsample is None else f"{name}-sub{subsample}")
    stamp = f"{name}; subsample {subsample}; split seed {seed}; 70/15/15 per class; PNG\n"
    if name in RECIPES:
        stamp = f"{name} ({RECIPES[name]}){stamp[len(name) :]}"
    marker = folder / MARKER
    if marker.exists() and marker.read_text() == stamp:
        return folder
    images, labels = LOADERS[name]()
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for split, items in split_indices(labels, seed=seed, subsample=subsample).items():
        for index, label in items:
            out = tmp / split / label
            out.mkdir(parents=True, exist_ok=True)
            pixels = images[index]() if callable(images[index]) else images[index]
            Image.fromarray(pixels).save(out / f"{name}-{index:05d}.png")
    marker_tmp = tmp / MARKER
    marker_tmp.write_text(stamp)
    shutil.rmtree(folder, ignore_errors=True)  # only ever our own stale layout
    os.replace(tmp, folder)
    return folder


def split_counts(folder: Path) -> dict[str, int]:
    return {s: sum(1 for _ in (folder / s).rglob("*.png")) for s in ("train", "val", "test")}
