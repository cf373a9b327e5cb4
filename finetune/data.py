"""Image-folder scanning, splits, bad-file handling, datasets and loaders.

Layouts:
    DIR/train/<class>/*  (optional DIR/val/<class>/*, DIR/test/<class>/*)
    DIR/<class>/*        (split into train/val by a stratified, seeded ``val_split``)

Every file is opened and fully decoded once before training (two threads; PIL releases the
GIL while decoding), so a truncated or corrupt image is reported by name up front and never
crashes an epoch: it is skipped with a warning, or fails the run with ``strict=True``.

Example:
    >>> info = scan_folder("my_images", val_split=0.2, seed=0)  # doctest: +SKIP
    >>> info.classes, len(info.train), len(info.val)  # doctest: +SKIP
    (['cat', 'dog'], 160, 40)
"""
from __future__ import annotations

import os
import random
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from PIL import Image, ImageOps

from .scan import DEFAULT_MAX_PIXELS, check_files, tiff_bands

if TYPE_CHECKING:
    from .backbones import BackboneInfo
    from .config import FinetuneConfig

__all__ = ["IMG_EXTENSIONS", "DataInfo", "scan_folder", "load_image", "ImageFileDataset",
           "DataError", "scan_data", "build_datasets", "build_loader", "walk_images",
           "stratified_split"]

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")
Sample = tuple[str, int]


class DataError(ValueError):
    """A data folder that cannot be used as it is; the message names the path and the fix."""


@dataclass(frozen=True)
class DataInfo:
    root: str
    layout: str                     # "splits" (train/val[/test] folders) or "classes"
    classes: tuple[str, ...]
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    test: tuple[Sample, ...] = ()
    skipped: tuple[tuple[str, str], ...] = field(default=())  # (path, reason)
    suspicious: tuple[tuple[str, str], ...] = ()  # usable but odd: (path, warning)
    duplicates: tuple[tuple[str, str], ...] = ()  # same bytes in two splits
    checks: dict = field(default_factory=dict, compare=False, repr=False)  # path -> FileCheck
    scan_seconds: float = field(default=0.0, compare=False)
    cache_hits: int = field(default=0, compare=False)
    multilabel: bool = False  # labels are tuples of class indices (CSV "labels" column)

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
                out[split] = [sum(1 for _, y in samples if has(y, c))
                              for c in range(self.num_classes)]
        return out


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


def scan_folder(root: str | os.PathLike, *, val_split: float = 0.2, seed: int = 0,
                strict: bool = False, progress: bool = False,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> DataInfo:
    """Find classes and images, split them, and check every image decodes.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        DataError: no class folders, a class without images, only one class, a val/test class
            unknown to train, or (with ``strict``) any unreadable image.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    layout = "splits" if (root / "train").is_dir() else "classes"
    base = root / "train" if layout == "splits" else root
    classes = _class_folders(base)
    split_files = {"train": _list_images(base, classes)}
    for split in ("val", "test"):
        if layout == "splits" and (root / split).is_dir():
            split_classes = _class_folders(root / split, require=False)
            unknown = sorted(set(split_classes) - set(classes))
            if unknown:
                raise DataError(f"{root / split}: classes {unknown} are not in {base}; "
                                f"every {split} class needs a train folder")
            split_files[split] = _list_images(root / split, split_classes, classes)
    all_files = [p for samples in split_files.values() for p, _ in samples]
    t0 = time.perf_counter()
    checks, hits = check_files(all_files, root=root, max_pixels=max_pixels, progress=progress)
    bad, odd = screen(checks, strict)
    split_files = {k: [(p, y) for p, y in v if p not in bad] for k, v in split_files.items()}
    _check_classes_nonempty(base, classes, split_files["train"])
    if "val" not in split_files:
        split_files["train"], split_files["val"] = stratified_split(
            split_files["train"], val_split, seed)
    duplicates = _cross_split_duplicates(split_files, checks)
    if duplicates:
        warnings.warn(f"{len(duplicates)} images have an identical copy in another split (e.g. "
                      f"{duplicates[0][0]} and {duplicates[0][1]}); that inflates validation "
                      "accuracy: remove the copies", stacklevel=2)
    return DataInfo(
        root=str(root), layout=layout, classes=tuple(classes),
        train=tuple(split_files["train"]), val=tuple(split_files["val"]),
        test=tuple(split_files.get("test", ())), skipped=tuple(sorted(bad.items())),
        suspicious=tuple(sorted(odd.items())), duplicates=tuple(duplicates),
        checks=checks, scan_seconds=time.perf_counter() - t0, cache_hits=hits,
    )


def screen(checks: dict, strict: bool) -> tuple[dict[str, str], dict[str, str]]:
    """(bad files, suspicious files) of a scan: ``strict`` turns either into an error, otherwise
    each bad file is skipped with a warning naming it."""
    bad = {p: c.problem for p, c in checks.items() if c.problem}
    odd = {p: c.warning for p, c in checks.items() if c.warning and not c.problem}
    if (bad or odd) and strict:
        path, reason = next(iter({**bad, **odd}.items()))
        raise DataError(f"{path}: {'unreadable image' if path in bad else 'suspicious file'} "
                        f"({reason}); remove or fix it, or drop --strict to skip bad images "
                        f"({len(bad)} bad, {len(odd)} suspicious)")
    for path, reason in bad.items():
        warnings.warn(f"skipping unreadable image {path}: {reason}", stacklevel=3)
    return bad, odd


def _cross_split_duplicates(split_files, checks) -> list[tuple[str, str]]:
    """Pairs of files with the same bytes in different splits (first seen, duplicate)."""
    seen: dict[str, tuple[str, str]] = {}
    pairs = []
    for split in SPLITS:
        for path, _ in split_files.get(split, ()):
            digest = checks[path].digest
            if digest in seen and seen[digest][1] != split:
                pairs.append((seen[digest][0], path))
            seen.setdefault(digest, (path, split))
    return pairs


def _class_folders(base: Path, require: bool = True) -> list[str]:
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if require and len(classes) == 0:
        raise DataError(f"{base}: no class folders found; expected {base}/<class>/<image> "
                        f"or {base}/train/<class>/<image>")
    if require and len(classes) == 1:
        raise DataError(f"{base}: only one class folder ('{classes[0]}'); a classifier needs at "
                        "least two classes, each in its own folder")
    return classes


def _list_images(base: Path, classes: Sequence[str], index_of: Sequence[str] | None = None
                 ) -> list[Sample]:
    index = {c: i for i, c in enumerate(index_of or classes)}
    samples = []
    for c in classes:
        for dirpath, dirnames, filenames in os.walk(base / c, followlinks=True):
            dirnames.sort()
            for f in sorted(filenames):
                if f.lower().endswith(IMG_EXTENSIONS) and not f.startswith("."):
                    samples.append((os.path.join(dirpath, f), index[c]))
    if index_of is None:
        _check_classes_nonempty(base, classes, samples)
    return samples


def _check_classes_nonempty(base: Path, classes: Sequence[str], samples: Sequence[Sample]):
    counts = np.bincount([y for _, y in samples], minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise DataError(f"{base / empty[0]}: class folder has no readable images "
                        f"({', '.join(IMG_EXTENSIONS)}); add images or remove the folder"
                        + (f" (also empty: {', '.join(empty[1:])})" if len(empty) > 1 else ""))


def stratified_split(samples: Sequence[Sample], val_split: float, seed: int
                     ) -> tuple[list[Sample], list[Sample]]:
    """Split ``(item, label)`` pairs per label with a seeded shuffle; sorted outputs."""
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


class ImageFileDataset:
    """``(image_tensor, label)`` pairs from ``(path, label)`` samples.

    A file that fails to decode mid-run (changed on disk after the scan) is replaced by the next
    sample with a warning naming it, unless ``strict``; an epoch never dies on one bad image.
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable, *, strict: bool = False,
                 cache=None, prepare: Callable | None = None, num_classes: int = 0,
                 loader: Callable = load_image):
        self.num_classes = num_classes  # > 0: labels are tuples, returned as multi-hot vectors
        self.loader = loader            # load_image (RGB) or a multi-band reader
        self.samples = list(samples)
        self.transform = transform
        self.strict = strict
        self.cache = cache      # ImageCache of prepared images, or None
        self.prepare = prepare  # what the cache applied (eval resize/crop), for uncached files

    def _image(self, i: int):
        cached = self.cache.image(i) if self.cache is not None else None
        if cached is not None:
            return cached
        image = self.loader(self.samples[i][0])
        return self.prepare(image) if self.prepare is not None else image

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        for attempt in range(len(self.samples)):
            i = (index + attempt) % len(self.samples)
            path, label = self.samples[i]
            try:
                image = self.transform(self._image(i))
                if self.num_classes:
                    import torch

                    target = torch.zeros(self.num_classes)
                    target[list(label)] = 1.0
                    return image, target
                return image, label
            except Exception as e:  # see _check_one
                if self.strict:
                    raise DataError(f"{path}: unreadable image ({e})") from None
                warnings.warn(f"skipping unreadable image {path}: {e}")
        raise DataError("no readable image left in the dataset")


def default_num_workers() -> int:
    """Loader workers: none on <= 2 cores (decoding in workers would steal the cores the model
    needs; measured in bench/), else half the cores up to 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 0 if (cores or 1) <= 2 else min(8, (cores or 1) // 2)


def _ignore_sigint(_worker_id: int) -> None:
    # Ctrl-C is the main process's to handle (it stops at a step boundary and saves); workers
    # that died of it would turn a clean stop into "worker exited unexpectedly"
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_loader(dataset, *, batch_size: int, training: bool, num_workers: int = -1,
                 seed: int = 0, pin_memory: bool = False, sample_weights=None,
                 world: int = 1, rank: int = 0):
    """A DataLoader with the project's defaults: for training a seeded shuffle by epoch
    (a ``DistributedSampler``, also with one process, so that N processes with batch b see
    exactly the batches one process with batch N*b sees; the Trainer calls ``set_epoch``), or
    with ``sample_weights`` a seeded ``WeightedRandomSampler``; evaluation in order, last partial
    batch kept."""
    import torch

    workers = default_num_workers() if num_workers < 0 else num_workers
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if training and sample_weights is not None:
        if world > 1:
            raise ValueError("data.sampler=balanced is not supported with several processes yet; "
                             "use --class-weights auto")
        sampler = torch.utils.data.WeightedRandomSampler(
            sample_weights, num_samples=len(dataset), replacement=True, generator=generator)
    elif training:
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=rank,
                                                      shuffle=True, seed=seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, sampler=sampler, generator=generator,
        num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0,
        worker_init_fn=_ignore_sigint if workers else None,
        drop_last=training and len(dataset) > batch_size * world,
    )


def class_balance(data: DataInfo, cfg: "FinetuneConfig"):
    """(loss class weights or None, training sample weights or None) for the imbalance options:
    inverse class frequency, normalised so a balanced set gets weight 1 everywhere."""
    import torch

    counts = torch.tensor(data.counts()["train"], dtype=torch.float64)
    if data.multilabel:
        # BCE pos_weight: negatives per positive of each label; a sample weighs as its rarest label
        n = len(data.train)
        loss_weights = ((n - counts) / counts.clamp(min=1)).float() \
            if cfg.data.class_weights == "auto" else None
        inverse = n / counts.clamp(min=1)
        # images without any label are a group of their own, weighted like a label
        empty = sum(1 for _, y in data.train if not y)
        per_sample = [max((float(inverse[c]) for c in y), default=n / max(empty, 1))
                      for _, y in data.train]
    else:
        inverse = counts.sum() / (len(counts) * counts.clamp(min=1))
        loss_weights = inverse.float() if cfg.data.class_weights == "auto" else None
        per_sample = [float(inverse[y]) for _, y in data.train]
    sample_weights = None
    if cfg.data.sampler == "balanced":
        sample_weights = torch.tensor(per_sample, dtype=torch.float64)
    return loss_weights, sample_weights


BAND_COUNTS = {"L": 1, "LA": 1, "P": 3, "RGB": 3, "RGBA": 3, "CMYK": 3, "I": 1, "F": 1}


def _check_bands(data: DataInfo, in_chans) -> None:
    """Multi-band files need ``in_chans`` and every file must have that many bands (1-band
    images are repeated); an RGB config must not meet multi-band files."""
    counts = {}
    for path, check in data.checks.items():
        if check.problem:
            continue
        match = re.match(r"(\d+)-band ", check.mode)
        counts[path] = int(match.group(1)) if match else \
            BAND_COUNTS.get(check.mode.split(";")[0], 3)
    banded = sorted({n for n in counts.values() if n > 3})
    if in_chans in (None, 3):
        if banded:
            example = next(p for p, n in counts.items() if n == banded[-1])
            raise DataError(f"{example}: a {banded[-1]}-band image; an RGB model would see a "
                            f"mangled version of it. Set --in-chans {banded[-1]} (data.in_chans)")
        return
    short = [(p, n) for p, n in counts.items() if 1 < n < in_chans]
    if short:
        raise DataError(f"{short[0][0]}: {short[0][1]} bands, but --in-chans is {in_chans}; "
                        f"{len(short)} files have fewer bands than that")


def scan_data(dataset, cfg: "FinetuneConfig", console) -> DataInfo:
    """Classes and splits of a folder or CSV manifest (every image checked) or of a torch
    Dataset."""
    if isinstance(dataset, (str, os.PathLike)):
        scan = scan_folder
        if str(dataset).lower().endswith(".csv"):
            from .manifest import scan_csv as scan
        data = scan(dataset, val_split=cfg.data.val_split, seed=cfg.train.seed,
                    strict=cfg.data.strict, progress=console.is_terminal,
                    max_pixels=cfg.data.max_pixels)
        _check_bands(data, cfg.data.in_chans)
        counts = data.counts()
        console.print(f"[bold]data[/] {data.root} ({data.layout}): {data.num_classes} classes; "
                      + "; ".join(f"{split} {sum(c)}" for split, c in counts.items())
                      + (f"; [yellow]{len(data.skipped)} unreadable files skipped[/]"
                         if data.skipped else "")
                      + (f"; [yellow]{len(data.suspicious)} suspicious[/]"
                         if data.suspicious else "")
                      + (f"; [yellow]{len(data.duplicates)} duplicated across splits[/]"
                         if data.duplicates else "")
                      + f" (scan {data.scan_seconds:.1f} s, {data.cache_hits} cached; "
                        "'finetune scan' shows the full report)")
        return data
    import torch

    if not isinstance(dataset, torch.utils.data.Dataset):
        raise TypeError("dataset must be a folder path or a torch Dataset, "
                        f"got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise DataError(f"{type(dataset).__name__} is empty; a dataset needs labelled images")
    labels = getattr(dataset, "targets", None)
    if labels is None:
        labels = [int(dataset[i][1]) for i in range(len(dataset))]
    labels = [int(y) for y in labels]
    classes = tuple(getattr(dataset, "classes", None) or
                    [str(i) for i in range(max(labels) + 1)])
    bad = sorted({y for y in labels if not 0 <= y < len(classes)})
    if bad:
        raise DataError(f"{type(dataset).__name__}: labels {bad[:5]} are outside 0..{len(classes) - 1}"
                        f" ({len(classes)} classes: {', '.join(classes[:5])}...)")
    if len(set(labels)) < 2:
        raise DataError(f"{type(dataset).__name__}: all images have label {labels[0]}; a "
                        "classifier needs at least two classes")
    train_idx, val_idx = stratified_split(list(enumerate(labels)), cfg.data.val_split,
                                           cfg.train.seed)
    data = DataInfo(root=f"<{type(dataset).__name__}>", layout="dataset", classes=classes,
                    train=tuple(train_idx), val=tuple(val_idx))
    console.print(f"[bold]data[/] {data.root}: {len(classes)} classes; train {len(train_idx)}; "
                  f"val {len(val_idx)}")
    return data


def build_datasets(dataset, data: DataInfo, cfg: "FinetuneConfig", info: "BackboneInfo", *,
                   train_augment: bool = True):
    """(train, val, test or None) datasets with the backbone's preprocessing; training images
    get the evaluation transform when ``train_augment`` is False (cached features)."""
    from .augment import build_transform, resolve_img_size
    from .imagecache import ImageCache, cache_side, downsizer, eval_preparer, split_transform

    train_tf = build_transform(info, cfg.data, training=train_augment, uint8=train_augment)
    eval_tf = build_transform(info, cfg.data, training=False)
    if data.layout == "dataset":  # samples are (index, label) into the user's Dataset
        return (_IndexedDataset(dataset, [i for i, _ in data.train], train_tf),
                _IndexedDataset(dataset, [i for i, _ in data.val], eval_tf), None)
    mode, size = cfg.data.cache_images, resolve_img_size(info, cfg.data.img_size)
    common = dict(strict=cfg.data.strict, num_classes=data.num_classes if data.multilabel else 0)
    if cfg.data.in_chans not in (None, 3):  # multi-band: float tensors, no uint8 image cache
        from functools import partial

        from .augment import build_band_transform

        bands = dict(loader=partial(load_bands, channels=cfg.data.in_chans), **common)
        train_bt = build_band_transform(info, cfg.data, training=train_augment)
        eval_bt = build_band_transform(info, cfg.data, training=False)
        return (ImageFileDataset(data.train, train_bt, **bands),
                ImageFileDataset(data.val, eval_bt, **bands),
                ImageFileDataset(data.test, eval_bt, **bands) if data.test else None)

    def make_eval(samples):
        if mode == "none":
            return ImageFileDataset(samples, eval_tf, **common)
        pil, tensor = split_transform(eval_tf)
        cache = ImageCache.build([p for p, _ in samples], prepare=eval_preparer(pil), mode=mode,
                                 side=size)
        return ImageFileDataset(samples, tensor, cache=cache, prepare=pil, **common)

    def make_train(samples):
        if not train_augment:
            return make_eval(samples)
        if mode == "none":
            return ImageFileDataset(samples, train_tf, **common)
        side = cache_side(size, info.crop_pct)
        cache = ImageCache.build([p for p, _ in samples], prepare=downsizer(side), mode=mode,
                                 side=side)
        return ImageFileDataset(samples, train_tf, cache=cache, **common)

    return (make_train(data.train), make_eval(data.val),
            make_eval(data.test) if data.test else None)


class _IndexedDataset:
    """A subset of a user's dataset with our transform applied to PIL images."""

    def __init__(self, dataset, indices: list[int], transform):
        self.dataset, self.indices, self.transform = dataset, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        import torch

        image, label = self.dataset[self.indices[i]]
        if not isinstance(image, torch.Tensor):
            image = self.transform(to_rgb(image))
        return image, int(label)


def walk_images(inputs: Sequence[str | os.PathLike]):
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
