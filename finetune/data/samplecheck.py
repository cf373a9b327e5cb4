"""The sampled check of ``finetune scan`` on WebDataset shards and Hugging Face data sets.

``finetune scan`` on shards or a Hugging Face data set decodes a
seeded sample of ``SAMPLED_CHECK`` items (all of them when there are fewer): enough to find a
systematic problem (a wrong column, undecodable data) in seconds, without decoding a
million-image set; training then replaces any other bad sample at load time.

Example:
    >>> info = scan_source("shards/", val_split=0.2, seed=0)  # doctest: +SKIP
    >>> len(info.checks), info.skipped  # doctest: +SKIP
    (1000, (('train-000003.tar:000412', 'truncated: image file is truncated'),))
"""

from __future__ import annotations

import dataclasses
import io
import random
import time
import warnings

from ..events import emit
from .datasets import dataset_info
from .folder import SPLITS, DataInfo
from .scan import DEFAULT_MAX_PIXELS, FileCheck, check_image
from .screening import check_items

__all__ = ["SAMPLED_CHECK", "scan_source"]

SAMPLED_CHECK = 1000  # items ``finetune scan`` decodes of a shard or Hugging Face data set


def _sampled_check(dataset, info: DataInfo, *, sample: int, seed: int,
                   max_pixels: int) -> DataInfo:  # fmt: skip
    """Decode a seeded sample of the items of ``info``'s splits; bad ones join ``skipped``."""
    items = [i for split in SPLITS for i, _ in getattr(info, split)]
    chosen = sorted(random.Random(seed).sample(items, min(sample, len(items))))
    reader = getattr(dataset, "read", None)  # shards: the stored bytes, format and all

    def check(i: int) -> FileCheck:
        if reader is not None:
            return check_image(io.BytesIO(reader(i)), max_pixels)
        try:
            image = dataset[i][0]
            image.load()
        except Exception as e:  # the data set's own decoder: any type
            return FileCheck(problem=f"undecodable: {type(e).__name__}: {e}"[:200])
        return FileCheck(None, None, image.width, image.height, image.mode, image.format or "")

    t0 = time.perf_counter()
    results = dict(check_items(check, chosen, "Checking a sample", len(chosen)))
    namer = getattr(dataset, "item_name", lambda i: f"{type(dataset).__name__}[{i}]")
    checks = {namer(i): c for i, c in results.items()}
    bad = tuple((name, c.problem) for name, c in checks.items() if c.problem)
    emit("info", f"decoded {len(chosen):,} of {len(items):,} samples (a seeded sample): "
                 f"{len(bad)} bad")  # fmt: skip
    return dataclasses.replace(info, skipped=info.skipped + bad, checks=checks,
                               scan_seconds=time.perf_counter() - t0)  # fmt: skip


def scan_source(spec: str, *, val_split: float = 0.2, seed: int = 0,
                max_pixels: int = DEFAULT_MAX_PIXELS, strict: bool = False,
                sample: int = SAMPLED_CHECK) -> DataInfo:  # fmt: skip
    """What ``finetune scan`` reports for shards or a ``hf:`` data set: classes and splits,
    samples without an image or label (shards: every header is read), and a decoded sample.
    With ``strict`` any bad sample is an error in ``DataInfo.errors``.

    Example:
        >>> scan_source("hf:./beans").counts()  # doctest: +SKIP
        {'train': [345, 348, 341], 'val': [44, 45, 44], 'test': [43, 43, 42]}
    """
    from .hf import is_hf, load_hf
    from .shards import load_shards

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report lists the bad samples
        if is_hf(spec):
            dataset = load_hf(spec)
        else:
            dataset = load_shards(spec, scan="quick", val_split=val_split, seed=seed,
                                  max_pixels=max_pixels)  # fmt: skip
        info = dataset_info(dataset, val_split=val_split, seed=seed)
    info = _sampled_check(dataset, info, sample=sample, seed=seed, max_pixels=max_pixels)
    if strict and info.skipped:
        name, why = info.skipped[0]
        message = f"{name}: unreadable sample ({why}); {len(info.skipped)} bad in all"
        info = dataclasses.replace(info, errors=info.errors + (message,))
    return info
