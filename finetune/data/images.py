"""Reading images: decode to 8-bit RGB or to float bands, and walk folders for image files.

Example:
    >>> load_image("scan.tif").mode  # doctest: +SKIP
    'RGB'
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError
from .depth import band_white_point, pil_stated_bits, stated_bits, white_point
from .scan import regular_file_problem, tiff_bands

__all__ = [
    "IMG_EXTENSIONS",
    "load_image",
    "to_rgb",
    "load_bands",
    "walk_dirs",
    "walk_images",
]

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image as 8-bit RGB (EXIF rotation applied, 16-bit scaled).

    Example:
        >>> load_image("scan.tif").mode  # doctest: +SKIP
        'RGB'
    """
    with Image.open(path) as img:
        bits = pil_stated_bits(img)  # before exif_transpose: its copy has no TIFF tags
        img = ImageOps.exif_transpose(img)
        img.load()
        return to_rgb(img, bits)


def to_rgb(img: Image.Image, bits: int = 0) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (16-bit and float scaled, alpha over black).

    16-bit data is divided by 65535, or by ``2**bits - 1`` when the file states fewer bits
    (``bits``, else read from a TIFF's tags); float data within [0, 1] is taken as stored. The
    rule and why: ``finetune.data.depth``.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # scaled to 8 bit instead of PIL's clipping convert("L")
        arr = np.asarray(img, dtype=np.float32)
        peak = float(arr.max()) if arr.size else 0.0
        hi = white_point(img.mode, peak, bits or pil_stated_bits(img))
        img = Image.fromarray(np.clip(arr * (255.0 / hi), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def walk_dirs(
    top: str | os.PathLike, skipped: list[tuple[str, str]] | None = None
) -> Iterator[tuple[str, list[str]]]:
    """``(folder, sorted file names)`` of ``top`` and every folder below it, following links
    but entering each real folder once: a link back to a folder that contains it (``ln -s ..``,
    ``ln -s .``) would repeat the tree until the path is too long or memory runs out, and a
    second way into a folder would list its images twice. Each is skipped with a warning naming
    the link, and added to ``skipped`` as ``(path, reason)`` (a scan reports it).

    Example:
        >>> [d for d, _ in walk_dirs("photos")]  # doctest: +SKIP
        ['photos', 'photos/sub']
    """

    def skip(path: str, reason: str) -> None:
        warnings.warn(f"skipping {path}: {reason}; remove the link", stacklevel=4)
        if skipped is not None:
            skipped.append((path, reason))

    top = os.fspath(top)
    real_top = os.path.realpath(top)
    if os.path.islink(top) and _within(os.path.realpath(os.path.dirname(top) or "."), real_top):
        skip(top, f"a link to {real_top}, a folder that contains it (a loop)")
        return
    seen = {real_top: top}  # real folder -> the path it was (or will be) listed under
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        keep = set()
        # plain folders first, so that a link, not the folder itself, is the one skipped
        for d in sorted(dirnames, key=lambda d: (os.path.islink(os.path.join(dirpath, d)), d)):
            path = os.path.join(dirpath, d)
            target = os.path.realpath(path)
            if _within(real, target):
                skip(path, f"a link to {target}, a folder that contains it (a loop)")
            elif target in seen:
                skip(path, f"the same folder as {seen[target]}, already listed")
            else:
                seen[target] = path
                keep.add(d)
        dirnames[:] = [d for d in sorted(dirnames) if d in keep]
        yield dirpath, sorted(filenames)


def _within(path: str, folder: str) -> bool:
    """Whether real path ``path`` is ``folder`` or inside it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def walk_images(inputs: Sequence[str | os.PathLike]) -> Iterator[Path]:
    """Image files of ``inputs`` (files as given, folders walked recursively, sorted). Anything
    that is not a regular file (a pipe named ``x.png``) is skipped with a warning, never opened.

    Example:
        >>> list(walk_images(["photos/"]))  # doctest: +SKIP
        [PosixPath('photos/a.jpg'), PosixPath('photos/sub/b.png')]"""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            candidates = (
                Path(dirpath) / f
                for dirpath, filenames in walk_dirs(path)
                for f in filenames
                if f.lower().endswith(IMG_EXTENSIONS)
            )
        elif os.path.lexists(path):
            candidates = iter([path])
        else:
            raise FileNotFoundError(f"image or folder not found: {path}")
        for candidate in candidates:
            problem = regular_file_problem(candidate)
            if problem is None:
                yield candidate
            else:
                warnings.warn(f"skipping {candidate}: {problem}", stacklevel=2)


def load_bands(path: str | os.PathLike, channels: int):
    """Read an image as a float32 tensor (channels, H, W) in [0, 1], keeping every band.

    TIFFs go through tifffile (any band count, bands first or last); other files through PIL.
    Integer data is scaled by its type's range (uint8 / 255, uint16 / 65535) or by the bits a
    TIFF states (12-bit: / 4095); float data is taken as stored (``finetune.data.depth``). Fewer
    bands than ``channels`` is an error; more are cut to ``channels``.

    Example:
        >>> load_bands("tile.tif", 13).shape  # doctest: +SKIP
        torch.Size([13, 64, 64])
    """
    import torch

    path = str(path)
    layout = tiff_bands(path) if path.lower().endswith((".tif", ".tiff")) else None
    if layout is not None:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            arr = np.moveaxis(tif.asarray(), layout[3], -1)  # bands last: (H, W, C)
            tags = {tag.code: tag.value for tag in tif.pages[0].tags}
    else:
        with Image.open(path) as img:
            tags = dict(getattr(img, "tag_v2", None) or {})  # exif_transpose's copy has none
            arr = np.asarray(ImageOps.exif_transpose(img))
    if arr.ndim == 2:
        arr = arr[:, :, None]
    top = band_white_point(arr.dtype, stated_bits(tags, arr.dtype.itemsize * 8))
    arr = arr.astype(np.float32) / top if top is not None else arr.astype(np.float32)
    if arr.shape[2] < channels:
        if arr.shape[2] == 1:  # single band: repeat, as grayscale is for RGB models
            arr = np.repeat(arr, channels, axis=2)
        else:
            raise DataError(f"{path}: {arr.shape[2]} bands, but data.in_chans is {channels}")
    return torch.from_numpy(np.ascontiguousarray(arr[:, :, :channels])).permute(2, 0, 1)
