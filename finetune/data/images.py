"""Reading images: decode to 8-bit RGB or to float bands, and walk folders for image files.

Example:
    >>> load_image("scan.tif").mode  # doctest: +SKIP
    'RGB'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError
from .scan import tiff_bands

__all__ = ["IMG_EXTENSIONS", "load_image", "to_rgb", "load_bands", "walk_images"]

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image as 8-bit RGB (EXIF rotation applied, 16-bit scaled).

    Example:
        >>> load_image("scan.tif").mode  # doctest: +SKIP
        'RGB'
    """
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        img.load()
        return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (16-bit and float scaled, alpha over black)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit/float data: scale to 8 bit instead of PIL's clipping convert("L"). 16-bit modes
        # always use the full 0-65535 range, so dark and bright images of a series stay comparable;
        # 32-bit int/float images have no stated range and use the one they hold.
        arr = np.asarray(img, dtype=np.float32)
        if img.mode.startswith("I;16"):
            hi = 65535.0
        else:
            hi = 255.0 if arr.max() <= 255 else 65535.0 if arr.max() <= 65535 else float(arr.max())
        img = Image.fromarray(np.clip(arr * (255.0 / hi), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def walk_images(inputs: Sequence[str | os.PathLike]):
    """Image files of ``inputs`` (files as given, folders walked recursively, sorted).

    Example:
        >>> list(walk_images(["photos/"]))  # doctest: +SKIP
        [PosixPath('photos/a.jpg'), PosixPath('photos/sub/b.png')]"""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
                dirnames.sort()
                for f in sorted(filenames):
                    if f.lower().endswith(IMG_EXTENSIONS):
                        yield Path(dirpath) / f
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"image or folder not found: {path}")


def load_bands(path: str | os.PathLike, channels: int):
    """Read an image as a float32 tensor (channels, H, W) in [0, 1], keeping every band.

    TIFFs go through tifffile (any band count, bands first or last); other files through PIL.
    Integer data is scaled by its type's range (uint8 / 255, uint16 / 65535); float data is
    taken as is. Fewer bands than ``channels`` is an error; more are cut to ``channels``.

    Example:
        >>> load_bands("tile.tif", 13).shape  # doctest: +SKIP
        torch.Size([13, 64, 64])
    """
    import torch

    path = str(path)
    layout = tiff_bands(path) if path.lower().endswith((".tif", ".tiff")) else None
    if layout is not None:
        import tifffile

        arr = np.moveaxis(tifffile.imread(path), layout[3], -1)  # bands last: (H, W, C)
    else:
        with Image.open(path) as img:
            arr = np.asarray(ImageOps.exif_transpose(img))
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    arr = arr.astype(np.float32)
    if arr.shape[2] < channels:
        if arr.shape[2] == 1:  # single band: repeat, as grayscale is for RGB models
            arr = np.repeat(arr, channels, axis=2)
        else:
            raise DataError(f"{path}: {arr.shape[2]} bands, but data.in_chans is {channels}")
    return torch.from_numpy(np.ascontiguousarray(arr[:, :, :channels])).permute(2, 0, 1)
