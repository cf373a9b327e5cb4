"""Bit depth: which value of high-depth data becomes white, and how the scan report says so.

One rule for ``to_rgb`` (8-bit RGB), ``load_bands`` (float bands) and the scan report:

- 16-bit integer data is divided by 65535, or by ``2**bits - 1`` when the file *states* fewer
  bits (TIFF BitsPerSample 258, or MaxSampleValue 281 of the form 2**k - 1, e.g. 4095 = 12-bit).
  The pixel values themselves never choose the scale: a 16-bit image that happens to be dark
  (max 4000 of 65535) would otherwise be brightened 16x while its slightly brighter neighbour
  (max 4100) was not, so brightness would stop meaning the same across a series. 12-bit data
  without such a tag stays dark but consistent; PIL does not read PNG's sBIT chunk.
- float data has no stated range: data within [0, 1] is taken as stored (the usual convention);
  larger float data (and 32-bit integer data) is scaled by the range it holds: /255, /65535 or
  by its maximum. Float bands (``load_bands``) are always taken as stored.

Example:
    >>> stated_bits({258: (16,), 281: (4095,)}, 16), white_point("I;16", 4000.0, 12)
    (12, 4095.0)
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

__all__ = ["stated_bits", "pil_stated_bits", "white_point", "band_white_point", "scaling_note"]

BITS_PER_SAMPLE, MAX_SAMPLE_VALUE = 258, 281  # TIFF tags


def _first(value: Any) -> int:
    value = value[0] if isinstance(value, (tuple, list)) and value else value
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def stated_bits(tags: Mapping[int, Any], dtype_bits: int) -> int:
    """Significant bits a TIFF states for its integer samples when fewer than the container's
    ``dtype_bits``; 0 when it states nothing (the container's full range applies)."""
    bits = _first(tags.get(BITS_PER_SAMPLE))
    top = _first(tags.get(MAX_SAMPLE_VALUE))
    # only a bit depth counts: a MaxSampleValue of 3871 is this image's maximum, not a range
    if top > 0 and ((top + 1) & top) == 0:
        bits = min(bits or dtype_bits, top.bit_length())
    return bits if 0 < bits < dtype_bits else 0


def pil_stated_bits(img) -> int:
    """Bits a 16-bit TIFF opened by PIL states (0: none, or not a 16-bit TIFF)."""
    tags = getattr(img, "tag_v2", None)
    return stated_bits(tags, 16) if tags is not None and img.mode.startswith("I;16") else 0


def white_point(mode: str, peak: float, bits: int = 0) -> float:
    """The value of a PIL ``I;16*``, ``I`` or ``F`` image that becomes 255 (see the module
    docstring); ``peak`` is the image's maximum, ``bits`` what the file states."""
    if mode.startswith("I;16"):
        return float(2**bits - 1) if bits else 65535.0
    if mode == "F" and peak <= 1.0:
        return 1.0
    return 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else float(peak)


def band_white_point(dtype: np.dtype, bits: int = 0) -> float | None:
    """The value of integer bands that becomes 1.0; None for float bands (taken as stored)."""
    if not np.issubdtype(dtype, np.integer):
        return None
    return float(2**bits - 1) if bits else float(np.iinfo(dtype).max)


def scaling_note(mode: str, bits: int = 0) -> str:
    """How data of a scan's ``FileCheck.mode`` is scaled, e.g. ``16-bit -> /65535``; empty for
    8-bit data (used as it is)."""
    if mode.startswith("I;16"):
        return f"{bits}-bit (stated) in 16-bit -> /{2**bits - 1}" if bits else "16-bit -> /65535"
    if mode == "F":
        return "float -> as stored within [0, 1], else /255, /65535 or /max by its range"
    if mode == "I":
        return "32-bit int -> /255, /65535 or /max by its range"
    match = re.match(r"\d+-band (\w+)$", mode)
    if match is None or match.group(1) == "uint8":
        return ""
    try:
        dtype = np.dtype(match.group(1))
    except TypeError:
        return ""
    top = band_white_point(dtype, bits)
    if top is None:
        return f"{dtype} bands -> as stored"
    return f"{dtype} bands -> /{top:.0f}" + (f" ({bits}-bit stated)" if bits else "")
