"""Image folders: classes from sub-folders, stratified seeded splits, every image checked.

Layouts:
    DIR/train/<class>/*  (optional DIR/val/<class>/*, DIR/test/<class>/*)
    DIR/<class>/*        (split into train/val by a stratified, seeded ``val_split``)

Every file is opened and fully decoded once before training (two threads; PIL releases the
GIL while decoding), so a truncated or corrupt image is reported by name up front and never
crashes an epoch: it is skipped with a warning, or fails the run with ``strict=True``.

Example:
    >>> info = scan_folder("my_images", val_split=0.2, seed=0)  # doctest: +SKIP
    >>> info.classes, len(info.train), len(info.val)  # doctest: +SKIP
    (['cat', 'dog'], 160, 40)
"""

from __future__ import annotations

import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from .images import IMG_EXTENSIONS
from .scan import DEFAULT_MAX_PIXELS, check_files

__all__ = [
    "DataInfo",
    "SPLITS",
    "scan_folder",
    "screen",
    "cross_split_duplicates",
    "stratified_split",
]

SPLITS = ("train", "val", "test")

Sample = tuple[str, int]


@dataclass(frozen=True)
class DataInfo:
    """What a scan found: classes, the samples of each split, and every problem file."""

    root: str
    layout: str  # "splits" (train/val[/test] folders) or "classes"
    classes: tuple[str, ...]
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    test: tuple[Sample, ...] = ()
    skipped: tuple[tuple[str, str], ...] = field(default=())  # (path, reason)
    suspicious: tuple[tuple[str, str], ...] = ()  # usable but odd: (path, warning)
    duplicates: tuple[tuple[str, str], ...] = ()  # same bytes in two splits
    checks: dict = field(default_factory=dict, compare=False, repr=False)  # path -> FileCheck
    scan_seconds: float = field(default=0.0, compare=False)
    cache_hits: int = field(default=0, compare=False)
    multilabel: bool = False  # labels are tuples of class indices (CSV "labels" column)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def counts(self) -> dict[str, list[int]]:
        """Images per class for each split, in class order (multi-label: images carrying it)."""
        out = {}
        for split in SPLITS:
            samples = getattr(self, split)
            if samples:
                has = (lambda y, c: c in y) if self.multilabel else (lambda y, c: y == c)
                out[split] = [
                    sum(1 for _, y in samples if has(y, c)) for c in range(self.num_classes)
                ]
        return out


def scan_folder(
    root: str | os.PathLike,
    *,
    val_split: float = 0.2,
    seed: int = 0,
    strict: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DataInfo:
    """Find classes and images, split them, and check every image decodes.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        DataError: no class folders, a class without images, only one class, a val/test class
            unknown to train, or (with ``strict``) any unreadable image.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    layout = "splits" if (root / "train").is_dir() else "classes"
    base = root / "train" if layout == "splits" else root
    classes = _class_folders(base)
    split_files = {"train": _list_images(base, classes)}
    for split in ("val", "test"):
        if layout == "splits" and (root / split).is_dir():
            split_classes = _class_folders(root / split, require=False)
            unknown = sorted(set(split_classes) - set(classes))
            if unknown:
                raise DataError(
                    f"{root / split}: classes {unknown} are not in {base}; "
                    f"every {split} class needs a train folder"
                )
            split_files[split] = _list_images(root / split, split_classes, classes)
    all_files = [p for samples in split_files.values() for p, _ in samples]
    t0 = time.perf_counter()
    checks, hits = check_files(all_files, root=root, max_pixels=max_pixels)
    bad, odd = screen(checks, strict)
    split_files = {k: [(p, y) for p, y in v if p not in bad] for k, v in split_files.items()}
    _check_classes_nonempty(base, classes, split_files["train"])
    if "val" not in split_files:
        split_files["train"], split_files["val"] = stratified_split(
            split_files["train"], val_split, seed
        )
    duplicates = cross_split_duplicates(split_files, checks)
    if duplicates:
        warnings.warn(
            f"{len(duplicates)} images have an identical copy in another split (e.g. "
            f"{duplicates[0][0]} and {duplicates[0][1]}); that inflates validation "
            "accuracy: remove the copies",
            stacklevel=2,
        )
    return DataInfo(
        root=str(root),
        layout=layout,
        classes=tuple(classes),
        train=tuple(split_files["train"]),
        val=tuple(split_files["val"]),
        test=tuple(split_files.get("test", ())),
        skipped=tuple(sorted(bad.items())),
        suspicious=tuple(sorted(odd.items())),
        duplicates=tuple(duplicates),
        checks=checks,
        scan_seconds=time.perf_counter() - t0,
        cache_hits=hits,
    )


def screen(checks: dict, strict: bool) -> tuple[dict[str, str], dict[str, str]]:
    """(bad files, suspicious files) of a scan: ``strict`` turns either into an error, otherwise
    each bad file is skipped with a warning naming it."""
    bad = {p: c.problem for p, c in checks.items() if c.problem}
    odd = {p: c.warning for p, c in checks.items() if c.warning and not c.problem}
    if (bad or odd) and strict:
        path, reason = next(iter({**bad, **odd}.items()))
        raise DataError(
            f"{path}: {'unreadable image' if path in bad else 'suspicious file'} "
            f"({reason}); remove or fix it, or drop --strict to skip bad images "
            f"({len(bad)} bad, {len(odd)} suspicious)"
        )
    for path, reason in bad.items():
        warnings.warn(f"skipping unreadable image {path}: {reason}", stacklevel=3)
    return bad, odd


def cross_split_duplicates(split_files, checks) -> list[tuple[str, str]]:
    """Pairs of files with the same bytes in different splits (first seen, duplicate)."""
    seen: dict[str, tuple[str, str]] = {}
    pairs = []
    for split in SPLITS:
        for path, _ in split_files.get(split, ()):
            digest = checks[path].digest
            if digest in seen and seen[digest][1] != split:
                pairs.append((seen[digest][0], path))
            seen.setdefault(digest, (path, split))
    return pairs


def _class_folders(base: Path, require: bool = True) -> list[str]:
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if require and len(classes) == 0:
        raise DataError(
            f"{base}: no class folders found; expected {base}/<class>/<image> "
            f"or {base}/train/<class>/<image>"
        )
    if require and len(classes) == 1:
        raise DataError(
            f"{base}: only one class folder ('{classes[0]}'); a classifier needs at "
            "least two classes, each in its own folder"
        )
    return classes


def _list_images(
    base: Path, classes: Sequence[str], index_of: Sequence[str] | None = None
) -> list[Sample]:
    index = {c: i for i, c in enumerate(index_of or classes)}
    samples = []
    for c in classes:
        for dirpath, dirnames, filenames in os.walk(base / c, followlinks=True):
            dirnames.sort()
            for f in sorted(filenames):
                if f.lower().endswith(IMG_EXTENSIONS) and not f.startswith("."):
                    samples.append((os.path.join(dirpath, f), index[c]))
    if index_of is None:
        _check_classes_nonempty(base, classes, samples)
    return samples


def _check_classes_nonempty(base: Path, classes: Sequence[str], samples: Sequence[Sample]):
    counts = np.bincount([y for _, y in samples], minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise DataError(
            f"{base / empty[0]}: class folder has no readable images "
            f"({', '.join(IMG_EXTENSIONS)}); add images or remove the folder"
            + (f" (also empty: {', '.join(empty[1:])})" if len(empty) > 1 else "")
        )


def stratified_split(
    samples: Sequence[Sample], val_split: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Split ``(item, label)`` pairs per label with a seeded shuffle; sorted outputs."""
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted({y for _, y in samples}):
        items = [s for s in samples if s[1] == label]
        rng.shuffle(items)
        n_val = round(len(items) * val_split)
        if val_split > 0 and len(items) >= 2:
            n_val = max(n_val, 1)  # every class is validated...
        n_val = min(n_val, len(items) - 1)  # ...and every class keeps a training image
        val += items[:n_val]
        train += items[n_val:]
    return sorted(train), sorted(val)
