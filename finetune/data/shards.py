"""WebDataset shards as training data: ``--data PATH/TO/shards`` or a brace pattern.

``PATH`` is a folder of ``.tar`` shards (or with ``train/``, ``val/``, ``test/`` sub-folders of
them), one ``.tar`` file, or a pattern such as ``data/train-{000000..000009}.tar`` (expanded by
webdataset's ``expand_urls``). A sample is the tar members that share a key (webdataset's naming:
``base_plus_ext``, the name up to the first dot): one image (``jpg``, ``png``, ``webp``, ...) and
its label, from ``cls`` (a class index), ``txt`` (a class name or index) or ``json`` (an object
whose ``label``, ``cls`` or ``class`` is a name or an index). Class names come from a
``classes.txt`` beside the shards (one per line; indices count from 0), else from the names the
labels use, else ``0``, ``1``, ... Splits: the shards' own (``train-*``/``val-*``/``test-*``
file names, or the sub-folders), else a seeded ``val_split`` of whole shards (a single shard is
split by sample instead).

Why a map-style index instead of webdataset's streaming pipeline: reading tar headers is cheap (no
image is decoded; 24 bytes per sample are kept, in typed arrays, and each tar header is dropped
once read), and with an index the project's own samplers apply unchanged: the
``DistributedSampler`` gives every DDP rank and loader worker disjoint samples, the seeded shuffle
differs per epoch, and a mid-epoch ``--resume`` skips the batches it trained without reading them.
Streaming would need its own rank/worker splitting, an approximate shuffle buffer and a resume
position inside a stream.
Each image is read with one ``os.pread`` at its offset in the tar, so workers share nothing.

Example:
    >>> shards = load_shards("shards/", scan="quick", val_split=0.2, seed=0)  # doctest: +SKIP
    >>> shards.classes, {k: len(v) for k, v in shards.splits.items()}  # doctest: +SKIP
    (('cat', 'dog'), {'train': 800, 'val': 200})
"""

from __future__ import annotations

import array
import io
import json
import os
import random
import re
import tarfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..errors import DataError
from .images import load_image
from .scan import DEFAULT_MAX_PIXELS

__all__ = ["IMAGE_EXTS", "ShardImages", "is_shards", "load_shards", "shard_files"]

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "ppm", "pgm")
LABEL_EXTS = ("cls", "json", "txt")  # the first a sample has is its label
JSON_KEYS = ("label", "cls", "class")
SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "test": "test", "testing": "test"}  # fmt: skip
_SPLIT_NAME = re.compile(r"^(train|training|val|valid|validation|test|testing)[-_.]")


def _webdataset():
    try:
        import webdataset
    except ImportError:
        raise DataError("WebDataset shards need the webdataset package: "
                        "pip install 'finetune[shards]'") from None  # fmt: skip
    return webdataset


def is_shards(data: Any) -> bool:
    """True for a shard spec: a ``.tar`` file, a brace pattern of them, or a folder holding
    ``.tar`` files (directly or in ``train/``, ``val/``, ``test/``).

    Example:
        >>> is_shards("data/train-{000000..000009}.tar")
        True
    """
    if not isinstance(data, (str, os.PathLike)):
        return False
    text = str(data)
    if text.startswith("hf:"):
        return False
    if re.search(r"\{[^}]*\.\.[^}]*\}", text) and ".tar" in text:
        return True
    path = Path(text).expanduser()
    if path.suffix == ".tar":
        return True
    if not path.is_dir():
        return False
    return any(path.glob("*.tar")) or any(
        (path / sub).is_dir() and any((path / sub).glob("*.tar")) for sub in SPLIT_WORDS
    )


def shard_files(spec: str | os.PathLike) -> tuple[Path, list[Path]]:
    """(the folder ``classes.txt`` is looked for in, the shard files) of a spec, sorted.

    Example:
        >>> shard_files("shards/")  # doctest: +SKIP
        (PosixPath('shards'), [PosixPath('shards/train-000000.tar'), ...])
    """
    text = str(spec)
    path = Path(text).expanduser()
    if "{" in text:
        files = [Path(p).expanduser() for p in _webdataset().shardlists.expand_urls(text)]
        root = Path(os.path.commonpath([str(f.parent) for f in files])) if files else path.parent
    elif path.suffix == ".tar":
        files, root = [path], path.parent
    else:
        files = sorted(path.glob("*.tar")) + sorted(
            f for sub in SPLIT_WORDS for f in (path / sub).glob("*.tar")
        )
        root = path
    missing = [f for f in files if not f.is_file()]
    if missing or not files:
        where = missing[0] if missing else path
        raise FileNotFoundError(f"--data {text}: shard {where} not found"
                                + (f" ({len(missing)} missing)" if len(missing) > 1 else ""))  # fmt: skip
    if root.name in SPLIT_WORDS and not (root / "classes.txt").is_file():
        root = root.parent  # shards/train/*.tar: classes.txt lies in shards/
    return root, files


def split_of(shard: Path, root: Path) -> Optional[str]:
    """``train``/``val``/``test`` from a shard's sub-folder or file name, else None."""
    if shard.parent != root and shard.parent.name in SPLIT_WORDS:
        return SPLIT_WORDS[shard.parent.name]
    match = _SPLIT_NAME.match(shard.name)
    return SPLIT_WORDS[match.group(1)] if match else None


class _Index:
    """The samples of a set of shards, as typed arrays (``shard``, ``offset``, ``size`` of the
    image member, label ``token``: 24 bytes a sample, where lists of Python ints took ~140), and
    the problems found while reading the headers."""

    def __init__(self):
        self.shard, self.token = array.array("i"), array.array("i")
        self.offset, self.size = array.array("q"), array.array("q")
        self.tokens: dict[tuple[str, str], int] = {}  # (kind, text) -> token id
        self.bad: list[tuple[str, str]] = []  # (shard:key, reason)

    def add_shard(self, k: int, path: Path) -> None:
        samples: dict[str, dict[str, Any]] = {}
        order: list[str] = []
        try:
            with tarfile.open(path, mode="r:") as tar:  # headers only; images are not read
                while (member := tar.next()) is not None:
                    tar.members.clear()  # TarFile keeps every header it read (~1 kB each)
                    if not member.isfile():
                        continue
                    key, ext = _base_plus_ext(member.name)
                    if key is None:
                        continue
                    if key not in samples:
                        samples[key] = {}
                        order.append(key)
                    ext = ext.lower()
                    if ext in LABEL_EXTS:
                        raw = tar.extractfile(member).read(1 << 16)  # a label is a few bytes
                        samples[key][ext] = raw.decode("utf-8", "replace")
                    elif ext in IMAGE_EXTS and "image" not in samples[key]:
                        samples[key]["image"] = (member.offset_data, member.size)
        except (tarfile.TarError, OSError) as e:
            raise DataError(f"{path}: not a readable tar shard ({e}); re-create it, or "
                            "move it out of the data") from None  # fmt: skip
        for key in order:
            self._add_sample(k, path, key, samples[key])

    def _add_sample(self, k: int, path: Path, key: str, sample: dict) -> None:
        name = f"{path.name}:{key}"
        if "image" not in sample:
            self.bad.append((name, f"no image member ({', '.join(IMAGE_EXTS[:4])}, ...)"))
            return
        token = _label_token(sample)
        if token is None:
            self.bad.append((name, "no label (.cls, .txt or .json with a 'label')"))
            return
        offset, size = sample["image"]
        self.shard.append(k)
        self.offset.append(offset)
        self.size.append(size)
        self.token.append(self.tokens.setdefault(token, len(self.tokens)))


def _base_plus_ext(name: str) -> tuple[Optional[str], str]:
    # webdataset's rule (tariterators.base_plus_ext): the key is the name up to the first dot
    match = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", name)
    return (match.group(1), match.group(2)) if match else (None, "")


def _label_token(sample: dict) -> Optional[tuple[str, str]]:
    """("index", "3") or ("name", "dog") from the first label member a sample has."""
    for ext in LABEL_EXTS:
        if ext not in sample:
            continue
        text = sample[ext].strip()
        if ext == "json":
            try:
                obj = json.loads(text)
            except ValueError:
                return None
            value = next((obj[k] for k in JSON_KEYS if isinstance(obj, dict) and k in obj), None)
            if isinstance(value, bool) or value is None:
                return None
            text = str(value)
            if isinstance(value, int):
                return ("index", text)
            return ("name", text)
        if re.fullmatch(r"\d+", text):
            return ("index", text)
        return ("name", text) if text and ext == "txt" else None
    return None


def _classes(root: Path, tokens: dict[tuple[str, str], int], spec: str) -> tuple[tuple[str, ...],
                                                                                 np.ndarray]:  # fmt: skip
    """Class names and each token's class index."""
    listed = root / "classes.txt"
    names = [t for kind, t in tokens if kind == "name"]
    if listed.is_file():
        classes = tuple(line.strip() for line in listed.read_text().splitlines() if line.strip())
    elif names:
        classes = tuple(sorted(set(names)))
    else:
        top = max((int(t) for _, t in tokens), default=-1)
        classes = tuple(str(i) for i in range(top + 1))
    position = {c: i for i, c in enumerate(classes)}
    mapping = np.zeros(len(tokens), dtype=np.int32)
    for (kind, text), token in tokens.items():
        index = position.get(text) if kind == "name" else int(text)
        if index is None or not 0 <= index < len(classes):
            source = f"{listed}" if listed.is_file() else "the labels"
            raise DataError(f"--data {spec}: label '{text}' is not one of the {len(classes)} "
                            f"classes of {source}; fix the label or classes.txt")  # fmt: skip
        mapping[token] = index
    return classes, mapping


class ShardImages(torch.utils.data.Dataset):
    """One map-style dataset over every sample of a set of shards: item ``i`` is ``(PIL RGB
    image, label)``; ``splits`` maps train/val/test to item indices, ``targets`` holds every
    label, ``classes`` the names and ``skipped`` the samples left out (``(shard:key, why)``)."""

    def __init__(self, files: list[Path], index: _Index, classes: tuple[str, ...],
                 labels: np.ndarray, splits: dict[str, list[int]], source: str):  # fmt: skip
        self.files = [str(f) for f in files]
        self.shard = np.asarray(index.shard, dtype=np.int32)
        self.offset = np.asarray(index.offset, dtype=np.int64)
        self.size = np.asarray(index.size, dtype=np.int64)
        self.targets = labels
        self.classes, self.splits, self.source = classes, splits, source
        self.skipped: tuple[tuple[str, str], ...] = tuple(index.bad)
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.targets)

    def read(self, i: int) -> bytes:
        """The image member's bytes of item ``i`` (one ``pread``: safe in any worker)."""
        if self._pid != os.getpid():  # a forked worker opens its own descriptors
            self._fds, self._pid = {}, os.getpid()
        k = int(self.shard[i])
        fd = self._fds.get(k)
        if fd is None:
            fd = self._fds[k] = os.open(self.files[k], os.O_RDONLY)
        return os.pread(fd, int(self.size[i]), int(self.offset[i]))

    def __getitem__(self, i: int):
        return load_image(io.BytesIO(self.read(i))), int(self.targets[i])

    def item_name(self, i: int) -> str:
        """``shard.tar:key`` of item ``i`` (from the member's tar header), for messages."""
        try:
            fd = os.open(self.files[int(self.shard[i])], os.O_RDONLY)
            try:
                header = os.pread(fd, 512, int(self.offset[i]) - 512)
            finally:
                os.close(fd)
            key = _base_plus_ext(tarfile.TarInfo.frombuf(header, "utf-8", "replace").name)[0]
        except (OSError, tarfile.TarError):  # a long (pax) name: the byte offset names it
            key = None
        name = Path(self.files[int(self.shard[i])]).name
        return f"{name}:{key}" if key else f"{name}@{int(self.offset[i])}"

    def __getstate__(self):
        return {**self.__dict__, "_fds": {}}

    def __repr__(self) -> str:
        return f"ShardImages({self.source})"


def load_shards(spec: str | os.PathLike, *, scan: str = "auto", val_split: float = 0.2,
                seed: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS,
                strict: bool = False) -> ShardImages:  # fmt: skip
    """Index the shards of ``spec`` (see the module docstring), split them, and check the
    images as deep as ``scan`` says (``auto`` is ``quick`` for shards: they have no image cache,
    so a full scan would decode every image twice in the first epoch; full, quick and off as
    for folders). Samples without an image or label, and images a scan finds bad, are left out
    (``skipped``, with a warning; ``strict`` fails instead).

    Raises:
        DataError: webdataset is missing, a shard is unreadable, a label is unknown.
        FileNotFoundError: no shard found.
    """
    _webdataset()  # one clear error when the extra is missing, whatever the spec
    root, files = shard_files(spec)
    index = _Index()
    from ..events import track

    for k, path in enumerate(track(files, "Indexing shards", total=len(files))):
        index.add_shard(k, path)
    if not index.token:
        raise DataError(f"--data {spec}: no labelled image in {len(files)} shard(s)"
                        + (f" (e.g. {index.bad[0][0]}: {index.bad[0][1]})" if index.bad else ""))  # fmt: skip
    classes, mapping = _classes(root, index.tokens, str(spec))
    labels = mapping[np.asarray(index.token, dtype=np.int64)]
    splits = _splits(files, root, np.asarray(index.shard), val_split, seed)
    shards = ShardImages(files, index, classes, labels, splits, str(spec))
    from .screening import screen_samples

    return screen_samples(shards, scan, max_pixels=max_pixels, strict=strict)


def _splits(files: list[Path], root: Path, shard_of: np.ndarray, val_split: float,
            seed: int) -> dict[str, list[int]]:  # fmt: skip
    """Item indices per split: the shards' own names, else a seeded split by shard (none with
    one shard: the caller splits by sample)."""
    named = [split_of(f, root) or "train" for f in files]
    candidates = [k for k, s in enumerate(named) if s == "train"]
    if "val" not in named and len(candidates) >= 2 and val_split > 0:
        random.Random(seed).shuffle(candidates)
        n_val = min(len(candidates) - 1, max(1, round(len(candidates) * val_split)))
        for k in candidates[:n_val]:
            named[k] = "val"
    splits: dict[str, list[int]] = {}
    for split in ("train", "val", "test"):
        chosen = [k for k, s in enumerate(named) if s == split]
        if chosen:
            splits[split] = np.flatnonzero(np.isin(shard_of, chosen)).tolist()
    if not splits.get("train"):
        raise DataError(f"{root}: no training shards (every shard is named val or test); "
                        "name the training shards train-*.tar")  # fmt: skip
    return splits
