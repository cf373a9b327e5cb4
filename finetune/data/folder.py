"""Image folders: classes from sub-folders, stratified seeded splits, every image checked.

Layouts:
    DIR/train/<class>/*  (optional DIR/val/<class>/*, DIR/test/<class>/*)
    DIR/<class>/*        (split into train/val by a stratified, seeded ``val_split``)

Every file is checked once before training (two threads), by default fully decoded, so a
truncated or corrupt image is reported by name up front and never crashes an epoch: it is
skipped with a warning, or fails the run with ``strict=True``. How deep the check goes is
``finetune.data.scan.scan_settings``'s (``data.scan``: full, quick, off); a file that fails to
decode later is replaced at load time and reported (``finetune.data.loaders``).

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
from .images import IMG_EXTENSIONS, walk_dirs
from .scan import DEFAULT_MAX_PIXELS, check_files

__all__ = [
    "DataInfo",
    "Problems",
    "SPLITS",
    "scan_folder",
    "screen",
    "cross_split_duplicates",
    "stratified_split",
    "warn_split_problems",
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
    # (path, reason): bad files, and folder links the walk skipped (loops, second links)
    skipped: tuple[tuple[str, str], ...] = field(default=())
    suspicious: tuple[tuple[str, str], ...] = ()  # usable but odd: (path, warning)
    duplicates: tuple[tuple[str, str], ...] = ()  # same bytes in two splits
    checks: dict = field(default_factory=dict, compare=False, repr=False)  # path -> FileCheck
    scan_seconds: float = field(default=0.0, compare=False)
    cache_hits: int = field(default=0, compare=False)
    multilabel: bool = False  # labels are tuples of class indices (CSV "labels" column)
    errors: tuple[str, ...] = ()  # problems that stop a run, collected by report_only scans

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


class Problems:
    """Problems that stop a run: raised as a ``DataError`` at once (training), or collected in
    ``found`` (``report_only`` scans, which go on to report every other problem too)."""

    def __init__(self, collect: bool = False):
        self.collect, self.found = collect, []

    def __call__(self, message: str) -> None:
        if not self.collect:
            raise DataError(message)
        self.found.append(message)


def scan_folder(
    root: str | os.PathLike,
    *,
    val_split: float = 0.2,
    seed: int = 0,
    strict: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    report_only: bool = False,
) -> DataInfo:
    """Find classes and images, split them, and check every image decodes.

    ``report_only`` (``finetune scan``): the problems that would stop a run are collected in
    ``DataInfo.errors`` instead of raised, and the scan goes on, so that one report lists them
    all with the bad files.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        DataError: (unless ``report_only``) no class folders, a class without images, only one
            class, a val/test class unknown to train, or (with ``strict``) any bad image.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():  # not a .csv (scan_csv reads those)
        raise DataError(f"{root} is a file: --data takes an image folder or a .csv manifest")
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    problem = Problems(collect=report_only)
    layout = "splits" if (root / "train").is_dir() else "classes"
    base = root / "train" if layout == "splits" else root
    classes = _class_folders(base, problem)
    walk_skipped: list[tuple[str, str]] = []  # symlink loops and second links to a folder
    split_files = _list_splits(root, layout, base, classes, problem, walk_skipped)
    if not report_only:  # fail before decoding anything; a report checks after the files
        _check_classes_nonempty(base, classes, split_files["train"], problem)
    all_files = [p for samples in split_files.values() for p, _ in samples]
    t0 = time.perf_counter()
    checks, hits = check_files(all_files, root=root, max_pixels=max_pixels)
    bad, odd = screen(checks, strict, problem)
    split_files = {k: [(p, y) for p, y in v if p not in bad] for k, v in split_files.items()}
    _check_classes_nonempty(base, classes, split_files["train"], problem)
    if "val" not in split_files:
        split_files["train"], split_files["val"] = stratified_split(
            split_files["train"], val_split, seed
        )
    info = DataInfo(
        root=str(root),
        layout=layout,
        classes=tuple(classes),
        train=tuple(split_files["train"]),
        val=tuple(split_files["val"]),
        test=tuple(split_files.get("test", ())),
        skipped=tuple(sorted({**bad, **dict(walk_skipped)}.items())),
        suspicious=tuple(sorted(odd.items())),
        duplicates=tuple(cross_split_duplicates(split_files, checks)),
        checks=checks,
        scan_seconds=time.perf_counter() - t0,
        cache_hits=hits,
        errors=tuple(problem.found),
    )
    warn_split_problems(info)
    return info


def screen(
    checks: dict, strict: bool, problem: Problems | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """(bad files, suspicious files) of a scan: ``strict`` makes either a problem that stops a
    run (raised, or passed to ``problem``), otherwise each bad file is skipped with a warning
    naming it."""
    bad = {p: c.problem for p, c in checks.items() if c.problem}
    odd = {p: c.warning for p, c in checks.items() if c.warning and not c.problem}
    if (bad or odd) and strict:
        path, reason = next(iter({**bad, **odd}.items()))
        (problem or Problems())(
            f"{path}: {'unreadable image' if path in bad else 'suspicious file'} "
            f"({reason}); remove or fix it, or drop --strict to skip bad images "
            f"({len(bad)} bad, {len(odd)} suspicious)"
        )
    for path, reason in bad.items():
        warnings.warn(f"skipping unreadable image {path}: {reason}", stacklevel=3)
    return bad, odd


def warn_split_problems(info: DataInfo) -> None:
    """Warn of what makes validation misleading: identical files in two splits, and classes
    that train but have no validation image (a class of one image keeps it for training)."""
    if info.duplicates:
        (first, copy), n = info.duplicates[0], len(info.duplicates)
        warnings.warn(
            f"{n} images have an identical copy in another split (e.g. {first} and {copy}); "
            "that inflates validation accuracy: remove the copies",
            stacklevel=3,
        )
    if not info.val:  # no validation at all (val_split 0) is the user's choice
        return
    counts = info.counts()
    never = [
        f"'{c}' ({n} image{'s' if n != 1 else ''})"
        for c, n, v in zip(info.classes, counts.get("train", ()), counts["val"])
        if n and not v
    ]
    if never:
        many = len(never) > 1
        warnings.warn(
            f"class{'es' if many else ''} {', '.join(never[:10])}"
            + (f" and {len(never) - 10} more" if len(never) > 10 else "")
            + f" ha{'ve' if many else 's'} no validation image: "
            f"{'they train' if many else 'it trains'} but {'are' if many else 'is'} never "
            "validated; add images",
            stacklevel=3,
        )


def cross_split_duplicates(split_files, checks) -> list[tuple[str, str]]:
    """Pairs of files with the same bytes in different splits (first seen, duplicate)."""
    seen: dict[str, tuple[str, str]] = {}
    pairs = []
    for split in SPLITS:
        for path, _ in split_files.get(split, ()):
            digest = checks[path].digest
            if not digest:  # a quick scan reads no content: nothing to compare
                continue
            if digest in seen and seen[digest][1] != split:
                pairs.append((seen[digest][0], path))
            seen.setdefault(digest, (path, split))
    return pairs


def _class_folders(base: Path, problem: Problems | None = None) -> list[str]:
    """Class folder names of ``base``; with ``problem``, fewer than two is a problem."""
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if problem is not None and len(classes) == 0:
        problem(
            f"{base}: no class folders found; expected {base}/<class>/<image> "
            f"or {base}/train/<class>/<image>"
        )
    if problem is not None and len(classes) == 1:
        problem(
            f"{base}: only one class folder ('{classes[0]}'); a classifier needs at "
            "least two classes, each in its own folder"
        )
    return classes


def _list_splits(
    root: Path, layout: str, base: Path, classes: Sequence[str], problem: Problems, skipped: list
) -> dict[str, list[Sample]]:
    """Image files by split: train from ``base``, val/test from their folders when present;
    folders the walk skipped go to ``skipped``."""
    split_files = {"train": _list_images(base, classes, skipped)}
    for split in ("val", "test"):
        if layout == "splits" and (root / split).is_dir():
            split_classes = _class_folders(root / split)
            unknown = sorted(set(split_classes) - set(classes))
            if unknown:
                problem(
                    f"{root / split}: classes {unknown} are not in {base}; "
                    f"every {split} class needs a train folder"
                )
            known = [c for c in split_classes if c in classes]
            split_files[split] = _list_images(root / split, known, skipped, classes)
    return split_files


def _list_images(
    base: Path, classes: Sequence[str], skipped: list, index_of: Sequence[str] | None = None
) -> list[Sample]:
    # every file with an image extension: the scan then reports what is not a readable image
    # (a pipe named x.png is "not a regular file" and never opened)
    index = {c: i for i, c in enumerate(index_of or classes)}
    return [
        (os.path.join(dirpath, f), index[c])
        for c in classes
        for dirpath, filenames in walk_dirs(base / c, skipped)
        for f in filenames
        if f.lower().endswith(IMG_EXTENSIONS) and not f.startswith(".")
    ]


def _check_classes_nonempty(
    base: Path, classes: Sequence[str], samples: Sequence[Sample], problem: Problems
) -> None:
    counts = np.bincount([y for _, y in samples], minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        problem(
            f"{base / empty[0]}: class folder has no readable images "
            f"({', '.join(IMG_EXTENSIONS)}); add images or remove the folder"
            + (f" (also empty: {', '.join(empty[1:])})" if len(empty) > 1 else "")
        )


def stratified_split(
    samples: Sequence[Sample], val_split: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Split ``(item, label)`` pairs per label with a seeded shuffle; sorted outputs. A label
    with one item keeps it for training (``warn_split_problems`` says so)."""
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
