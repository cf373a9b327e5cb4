"""Decoded, prepared images kept as uint8 arrays, so epochs after the first decode nothing.

Each image is decoded once (threads) and prepared: training images get their shorter side
resized to ``side`` pixels (``cache_side``: 1.25x the evaluation resize, so random resized crops
keep their detail); evaluation images get the whole deterministic part of the evaluation
transform (resize and center crop), so cached validation is bit-identical to ``predict``. The
results are stored as:

- ``memory``: a list of arrays in this process (small sets; the default when the estimate fits
  in a quarter of the free RAM, at most 4 GiB);
- ``disk``: one flat uint8 file in ``~/.cache/finetune/images/``, reused by the next run over
  the same files (keyed by the preparation and each file's path and ``stat_key``: size, mtime,
  inode and ctime, so new content copied with ``cp -p`` is seen). Each image is read with one
  ``os.pread`` into a fresh buffer: the kernel's page cache keeps the file fast and shared by
  every process, while the process's own memory stays flat. A memory map of the file would count
  every page training touched in the process's RSS (measured: the whole file, about 5 kB per
  image at 32 px, by the end of the first epoch). The index (offset, height, width, channels of
  each image) is one int64 array, not a Python list per image;
- ``none``: decode from the original file every time.

Example:
    >>> cache = ImageCache.build(paths, prepare=downsizer(160), key="train160")  # doctest: +SKIP
    >>> cache.image(0).size  # a PIL image whose shorter side is 160 px  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import weakref
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image

from .._io import atomic_path, cache_dir
from ..events import track
from .images import load_image
from .scan import stat_key
from .threads import thread_map

__all__ = ["ImageCache", "cache_side", "downsizer", "eval_preparer"]

MEMORY_LIMIT = 4 << 30  # bytes


def cache_side(img_size: int, crop_pct: float) -> int:
    """Stored shorter side in px: the eval resize (img_size / crop_pct), plus 25 % headroom for
    random resized crops of part of the image."""
    return int(round(max(img_size / crop_pct, img_size) * 1.25))


def downsizer(side: int) -> Callable[[str], np.ndarray]:
    """Prepare a training image: shorter side down to ``side`` px (never up)."""

    def prepare(path: str) -> np.ndarray:
        img = load_image(path)
        scale = side / min(img.size)
        if scale < 1:
            size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
        return np.asarray(img, dtype=np.uint8)

    prepare.key = f"downsize{side}"
    return prepare


def eval_preparer(pil_steps) -> Callable[[str], np.ndarray]:
    """Prepare an evaluation image: the PIL part of the evaluation transform (resize, crop)."""

    def prepare(path: str) -> np.ndarray:
        return np.asarray(pil_steps(load_image(path)), dtype=np.uint8)

    prepare.key = repr(pil_steps)
    return prepare


def split_transform(transform):
    """(PIL steps, tensor steps) of a torchvision Compose: everything before ToTensor is
    deterministic for evaluation transforms and can be cached."""
    from torchvision import transforms as T

    steps = list(transform.transforms)
    at = next(i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__)
    return T.Compose(steps[:at]), T.Compose(steps[at:])


class ImageCache:
    """Downsized RGB images by index; see the module docstring."""

    def __init__(self, arrays=None, index=None, mode: str = "none", paths: Sequence[str] = (),
                 data_file: Optional[str | os.PathLike] = None):  # fmt: skip
        self.arrays, self.index, self.mode = arrays, index, mode
        self.paths = list(paths)
        self.data_file = None if data_file is None else str(data_file)
        self._fd: Optional[int] = None  # of data_file, opened by the process that reads
        self._pid = os.getpid()

    @classmethod
    def build(
        cls,
        paths: Sequence[str],
        *,
        prepare: Callable[[str], np.ndarray],
        mode: str = "auto",
        side: int = 0,
    ) -> "ImageCache":
        """Prepare every image now; ``side`` (px) sizes the memory estimate for ``auto``."""
        paths = list(paths)
        if mode == "none" or not paths:
            return cls(mode="none", paths=paths)
        if mode == "auto":
            mode = "memory" if _estimate_bytes(paths, side) < _memory_budget() else "disk"
        if mode == "disk":
            return cls._disk(paths, prepare, side)
        return cls(arrays=list(_decode_iter(paths, prepare)), mode="memory", paths=paths)

    @classmethod
    def _disk(cls, paths: list[str], prepare, side: int) -> "ImageCache":
        folder = cache_dir() / "images"
        data_file = folder / f"{_disk_key(paths, prepare.key)[:24]}.u8"
        index_file = data_file.with_suffix(".json")
        index = _read_index(index_file, len(paths)) if data_file.is_file() else None
        if index is None:
            import shutil

            folder.mkdir(parents=True, exist_ok=True)
            need = _estimate_bytes(paths, side)
            free = shutil.disk_usage(folder).free
            if need > free * 0.9:
                raise OSError(
                    f"image cache: ~{need / 2**30:.1f} GiB needed in {folder}, "
                    f"{free / 2**30:.1f} GiB free; use --cache-images none or free "
                    "disk space (FINETUNE_CACHE moves the cache)"
                )
            index, offset = np.zeros((len(paths), 4), dtype=np.int64), 0
            with atomic_path(data_file) as tmp:
                with open(tmp, "wb") as f:  # streamed: never all images in memory at once
                    for i, a in enumerate(_decode_iter(paths, prepare)):
                        index[i] = [offset, *a.shape] if a is not None else [offset, 0, 0, 0]
                        if a is not None:
                            f.write(np.ascontiguousarray(a).tobytes())
                            offset += a.size
            with atomic_path(index_file) as tmp:
                _write_index(tmp, index)
        return cls(index=index, mode="disk", paths=paths, data_file=data_file)

    def image(self, i: int) -> Optional[Image.Image]:
        """The prepared image, or None when it must be read from its file (not cached, or it
        failed to decode while caching)."""
        if self.mode == "memory":
            return None if self.arrays[i] is None else Image.fromarray(self.arrays[i])
        if self.mode == "disk":
            offset, h, w, c = (int(v) for v in self.index[i])
            if h == 0:
                return None
            data = os.pread(self._file(), h * w * c, offset)  # a fresh buffer; no memory map
            if len(data) != h * w * c:
                raise OSError(f"{self.data_file}: the image cache file is shorter than its "
                              "index; delete it and the next run rebuilds it")  # fmt: skip
            return Image.fromarray(np.frombuffer(data, dtype=np.uint8).reshape(h, w, c))
        return None

    def _file(self) -> int:
        """The descriptor of the cache file in this process (a forked loader worker opens its
        own, as ``ShardImages.read`` does)."""
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.data_file, os.O_RDONLY), os.getpid()
            weakref.finalize(self, _close, self._fd)
        return self._fd

    def __getstate__(self):
        return {**self.__dict__, "_fd": None}


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _disk_key(paths: list[str], prepare_key: str) -> str:
    """sha1 hex of ``json.dumps([prepare_key] + [(path, stat_key(path)), ...])``, hashed piece by
    piece: the same key as ever, without the whole text (~150 bytes per image) in memory."""
    key = hashlib.sha1(b"[" + json.dumps(prepare_key).encode())
    for p in paths:
        key.update(b", " + json.dumps([p, stat_key(p)]).encode())
    key.update(b"]")
    return key.hexdigest()


def _write_index(path, index: np.ndarray) -> None:
    """The index as JSON rows ``[[offset, h, w, c], ...]`` (the format of earlier versions, so
    their caches stay valid), written in chunks."""
    with open(path, "w") as f:
        f.write("[")
        for start in range(0, len(index), 4096):
            rows = index[start : start + 4096].tolist()
            f.write(("" if start == 0 else ", ") + ", ".join(json.dumps(r) for r in rows))
        f.write("]")


def _read_index(path: Path, n: int) -> Optional[np.ndarray]:
    """The JSON index as an ``(n, 4)`` int64 array, parsed by numpy (no Python list per row);
    None when it is missing or damaged (the cache is then built again)."""
    try:
        text = path.read_text().translate({ord("["): " ", ord("]"): " "})
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns of text it could not parse
            values = np.fromstring(text, dtype=np.int64, sep=",")
    except (OSError, ValueError, DeprecationWarning):
        return None
    return values.reshape(n, 4) if values.size == 4 * n else None


def _decode_iter(paths: list[str], prepare):
    """Prepared arrays in order (None for a file that fails), decoded by threads with a bounded
    number held at once."""

    def safe(path):
        try:
            return prepare(path)
        except Exception:  # changed since the scan: the dataset reads (and reports) the file
            return None

    arrays = thread_map(safe, paths, window=64)  # 64 in flight keep 8 threads busy
    yield from track(arrays, "Caching images", total=len(paths))


def _estimate_bytes(paths: list[str], side: int) -> int:
    # reads headers only: PIL knows the size before it decodes any pixel
    sample = paths[:: max(1, len(paths) // 64)]
    total = 0
    for p in sample:
        try:
            with Image.open(p) as img:
                w, h = img.size
        except Exception:  # unreadable files are skipped by the dataset anyway
            continue
        scale = min(1.0, side / min(w, h)) if side else 1.0
        total += round(w * scale) * round(h * scale) * 3
    return total * len(paths) // max(1, len(sample))


def _memory_budget() -> int:
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        free = 8 << 30
    return min(MEMORY_LIMIT, free // 4)
