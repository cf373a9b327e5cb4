"""The scan of WebDataset shards before a run: each image member read once (threads; ``os.pread``
and PIL release the GIL) and its header parsed (``quick``) or decoded (``full``); bad samples are
left out of the splits and listed, as a folder scan does.

Example:
    >>> shards = screen_samples(shards, "full")  # doctest: +SKIP
    >>> shards.skipped  # doctest: +SKIP
    (('train-000003.tar:000412', 'truncated: image file is truncated'),)
"""

from __future__ import annotations

import io
import warnings
from typing import Callable, Iterable, Iterator

from PIL import Image

from ..errors import DataError
from ..events import track
from .scan import DEFAULT_MAX_PIXELS, FileCheck, check_image
from .threads import thread_map

__all__ = ["check_items", "screen_samples"]

WARN_EACH = 10  # bad samples warned about one by one; the rest in one line


def check_items(check: Callable[[int], FileCheck], items: Iterable[int], what: str,
                total: int) -> Iterator[tuple[int, FileCheck]]:  # fmt: skip
    """``(item, check(item))`` of every item, in order, from threads (at most a bounded number
    in flight: ``threads.thread_map``), with our pixel limit instead of PIL's."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # check_image applies max_pixels, with a clearer message
    try:
        yield from track(thread_map(lambda i: (i, check(i)), items), what, total=total)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _warn_bad(bad: list[tuple[str, str]]) -> None:
    for name, reason in bad[:WARN_EACH]:
        warnings.warn(f"skipping unreadable image {name}: {reason}", stacklevel=3)
    if len(bad) > WARN_EACH:
        warnings.warn(f"skipping {len(bad) - WARN_EACH} more bad samples "
                      "('finetune scan' lists them)", stacklevel=3)  # fmt: skip


def screen_samples(shards, scan: str, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                   strict: bool = False):  # fmt: skip
    """Check the images of a ``ShardImages`` as deep as ``scan`` says (``auto``: ``quick``) and
    leave the bad ones out of its splits (``skipped``); ``strict`` fails on the first.

    Example:
        >>> shards = screen_samples(shards, "full")  # doctest: +SKIP
    """
    level = "quick" if scan == "auto" else scan
    shards.scan_level = level
    bad: dict[int, str] = {}
    if level in ("quick", "full"):
        decode = level == "full"

        def check(i: int) -> FileCheck:
            try:
                data = shards.read(i)
            except OSError as e:
                return FileCheck(problem=f"unreadable: {e.strerror or e}")
            return check_image(io.BytesIO(data), max_pixels, decode=decode)

        what = "Scanning shards" + ("" if decode else " (quick)")
        checks = check_items(check, range(len(shards)), what, len(shards))
        bad = {i: c.problem for i, c in checks if c.problem}  # only the bad ones are kept
    found = list(shards.skipped) + [(shards.item_name(i), why) for i, why in sorted(bad.items())]
    if found and strict:
        raise DataError(f"{found[0][0]}: unreadable sample ({found[0][1]}); fix or remove it, "
                        f"or drop --strict to skip bad samples ({len(found)} bad)")  # fmt: skip
    _warn_bad(found)
    if bad:
        shards.splits = {k: [i for i in v if i not in bad] for k, v in shards.splits.items()}
    shards.skipped = tuple(found)
    return shards
