"""``finetune pack``: an image folder or CSV manifest to WebDataset shards.

The data is scanned first (every image decoded, unless ``scan`` says otherwise) and split as a
run would split it (the folder's own train/val/test, else the seeded stratified ``val_split``),
bad files are left out and listed. Each split is written, in a seeded shuffled order, to
``OUT/<split>-000000.tar``, ... by webdataset's ``ShardWriter`` (a new shard once one reaches
``shard_size`` bytes): per image its bytes unchanged (``<key>.<ext>``), its class index
(``<key>.cls``) and ``<key>.json`` (``{"label": class name, "path": the source file}``).
Beside them: ``classes.txt`` (one name per line, index order) and ``manifest.json`` (counts,
splits, the shards with their sizes, the files left out). ``finetune run --data OUT`` then trains
on the same images, split the same way (``finetune.data.shards``).

Example:
    >>> report = pack_data("photos/", "shards/", shard_size="500MB")  # doctest: +SKIP
    >>> report.counts, [s.name for s in report.shards]  # doctest: +SKIP
    ({'train': 800, 'val': 200}, ['train-000000.tar', 'val-000000.tar'])
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .._io import atomic_path
from ..errors import DataError
from ..events import track
from .folder import SPLITS, DataInfo, scan_folder
from .scan import DEFAULT_MAX_PIXELS, scan_settings

__all__ = ["PackReport", "Shard", "pack_data", "parse_size", "MANIFEST_NAME", "CLASSES_NAME"]

MANIFEST_NAME = "manifest.json"
CLASSES_NAME = "classes.txt"
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip


@dataclass(frozen=True)
class Shard:
    """One written shard: file name, split, images, bytes."""

    name: str
    split: str
    samples: int
    bytes: int


@dataclass(frozen=True)
class PackReport:
    """What ``pack_data`` wrote: where, the classes, images per split, the shards, and the
    files left out (``(path, reason)``)."""

    out: Path
    source: str
    classes: tuple[str, ...]
    counts: dict[str, int]
    shards: tuple[Shard, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    seconds: float = field(default=0.0, compare=False)

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.shards)


def parse_size(size: str | int) -> int:
    """Bytes of ``500MB``, ``1.5GiB``, ``20000`` (decimal and binary units).

    Example:
        >>> parse_size("500MB"), parse_size("1GiB")
        (500000000, 1073741824)
    """
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(size))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in UNITS or float(match.group(1)) <= 0:
        raise ValueError(f"--shard-size {size}: give a size such as 500MB, 2GB or 1GiB")
    return int(float(match.group(1)) * UNITS[unit])


def _scan(data: str | os.PathLike, val_split: float, seed: int, max_pixels: int) -> DataInfo:
    scan = scan_folder
    if str(data).lower().endswith(".csv"):
        from .manifest import scan_csv as scan
    info = scan(data, val_split=val_split, seed=seed, max_pixels=max_pixels)
    if info.multilabel:
        raise DataError(f"{data}: a multi-label manifest (a 'labels' column); pack takes "
                        "single-label data (path,label)")  # fmt: skip
    return info


def pack_data(data: str | os.PathLike, out: str | os.PathLike, *,
              shard_size: str | int = "500MB", val_split: float = 0.2, seed: int = 0,
              max_pixels: int = DEFAULT_MAX_PIXELS, scan: str = "full") -> PackReport:  # fmt: skip
    """Scan ``data`` (folder or CSV) and write its splits as shards into ``out`` (see the module
    docstring); ``scan`` is the depth of the check before (``full`` decodes every image).

    Raises:
        FileExistsError: ``out`` already holds shards.
        DataError: the scan's (no classes, ...), or a multi-label manifest.
    """
    size = parse_size(shard_size)
    out = Path(out).expanduser()
    if out.is_dir() and (any(out.glob("*.tar")) or (out / MANIFEST_NAME).exists()):
        raise FileExistsError(f"{out} already holds shards; pack into a new folder (or remove "
                              "its .tar files and manifest.json)")  # fmt: skip
    t0 = time.perf_counter()
    with scan_settings(scan):
        info = _scan(data, val_split, seed, max_pixels)
    wds = _webdataset()
    out.mkdir(parents=True, exist_ok=True)
    shards: list[Shard] = []
    for split in SPLITS:
        samples = list(getattr(info, split))
        if samples:
            random.Random(f"{seed}/{split}").shuffle(samples)  # shards mix the classes
            shards += _write_split(wds, out, split, samples, info, size)
    counts = {s: len(getattr(info, s)) for s in SPLITS if getattr(info, s)}
    report = PackReport(out, str(data), info.classes, counts, tuple(shards), info.skipped,
                        time.perf_counter() - t0)  # fmt: skip
    with atomic_path(out / CLASSES_NAME) as tmp:
        Path(tmp).write_text("".join(f"{c}\n" for c in info.classes))
    with atomic_path(out / MANIFEST_NAME) as tmp:
        Path(tmp).write_text(json.dumps(_manifest(report), indent=1))
    return report


def _webdataset():
    from .shards import _webdataset as load

    return load()


def _write_split(wds, out: Path, split: str, samples, info: DataInfo, size: int) -> list[Shard]:
    written: list[Shard] = []
    counts: list[int] = []

    def done(fname: str) -> None:  # ShardWriter calls it as each shard is closed
        path = Path(fname)
        written.append(Shard(path.name, split, counts[-1], path.stat().st_size))

    writer = wds.ShardWriter(str(out / f"{split}-%06d.tar"), maxsize=size, maxcount=10**9,
                             post=done, verbose=0)  # fmt: skip
    try:
        for n, (path, label) in enumerate(track(samples, f"Packing {split}", total=len(samples))):
            ext = Path(path).suffix.lower().lstrip(".") or "img"
            meta = {"label": info.classes[label], "path": _relative(path, info.root)}
            writer.write({"__key__": f"{n:08d}", ext: Path(path).read_bytes(), "cls": label,
                          "json": meta})  # fmt: skip
            counts[-1:] = [writer.count]
    finally:
        writer.close()
    return written


def _relative(path: str, root: str) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:  # another drive (Windows)
        return path


def _manifest(report: PackReport) -> dict:
    return {
        "format": "webdataset",
        "written_by": "finetune pack",
        "source": report.source,
        "classes": list(report.classes),
        "counts": report.counts,
        "splits": {s: [x.name for x in report.shards if x.split == s] for s in report.counts},
        "shards": [vars(s) for s in report.shards],
        "skipped": [list(p) for p in report.skipped],
    }
