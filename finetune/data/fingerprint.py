"""A fingerprint of the scanned data, so that a resumed run trains on the data it started with.

Recorded in ``config.json`` (``finetune.data.fingerprint``): the class names, the number of
images per split, and a SHA-256 of the sorted ``(path relative to the data root, label, content
digest)`` list (the scan already hashes every file).
Relative paths make a data set that moved (``--resume RUN --data NEW_PATH``) match itself.

Example:
    >>> fp = fingerprint(data)  # doctest: +SKIP
    >>> describe_change(fp, fingerprint(rescanned))  # doctest: +SKIP
    'classes changed: cat, dog -> healthy, tumor'
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import os
from typing import Any, Optional

from .folder import SPLITS, DataInfo

__all__ = ["fingerprint", "describe_change"]


def fingerprint(data: DataInfo) -> dict[str, Any]:
    """Classes, images per split, and a digest of the file list (paths relative to the root,
    labels and the files' content digests from the scan)."""
    return {
        "classes": list(data.classes),
        "images": {s: len(getattr(data, s)) for s in SPLITS},
        "sha256": _rows_digest(data),
    }


def _rows_digest(data: DataInfo) -> str:
    """SHA-256 of ``json.dumps(sorted(rows, key=str))`` (the digest runs have recorded), hashed
    row by row in that order: only each row's sort key is held at once, not the rows, their
    keys and the whole JSON text together (~0.5 kB per image at the start of a run, measured)."""
    samples = [s for split in SPLITS for s in getattr(data, split)]  # row i: samples[i]
    starts = list(itertools.accumulate(len(getattr(data, split)) for split in SPLITS))
    keys = [str(_row(data, samples, starts, i)) for i in range(len(samples))]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    del keys
    digest = hashlib.sha256(b"[")
    for n, i in enumerate(order):
        row = json.dumps(_row(data, samples, starts, i))
        digest.update((", " if n else "").encode() + row.encode())
    digest.update(b"]")
    return digest.hexdigest()


def _row(data: DataInfo, samples: list, starts: list[int], i: int) -> list:
    """``[split, name, label, content digest]`` of sample ``i`` of all splits in order
    (``starts``: where each split's samples end)."""
    split = SPLITS[bisect.bisect_right(starts, i)]
    item, label = samples[i]
    name = item if isinstance(item, int) else _relative(item, data.root)
    check = data.checks.get(item) if not isinstance(item, int) else None
    digest = getattr(check, "digest", None)  # the content: same names, other pixels
    return [split, name, list(label) if isinstance(label, tuple) else label, digest]


def describe_change(saved: dict[str, Any], now: dict[str, Any]) -> Optional[str]:
    """What differs between two fingerprints in words, or None when they match."""
    if saved.get("classes") != now["classes"]:
        return (
            f"classes changed: {', '.join(saved.get('classes', []))} -> {', '.join(now['classes'])}"
        )
    if saved.get("images") != now["images"]:
        diffs = [
            f"{s} {saved.get('images', {}).get(s)} -> {n}"
            for s, n in now["images"].items()
            if saved.get("images", {}).get(s) != n
        ]
        return "images per split changed: " + ", ".join(diffs)
    if saved.get("sha256") != now["sha256"]:
        return "the same number of images, but other files (renamed, replaced or relabelled)"
    return None


def _relative(path: str, root: str) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:  # another drive (Windows)
        return path
