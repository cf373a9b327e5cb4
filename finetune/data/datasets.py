"""Datasets and loaders: a scanned folder, manifest or user ``Dataset`` becomes train/val/test
datasets with the backbone's preprocessing, and DataLoaders that resume bit-identically.

Example:
    >>> data = scan_data("my_images", cfg)  # doctest: +SKIP
    >>> train, val, test = build_datasets("my_images", data, cfg, info)  # doctest: +SKIP
    >>> loader = build_loader(train, batch_size=32, training=True)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import TYPE_CHECKING, Callable, Sequence

from ..errors import DataError
from ..events import emit
from .balance import class_balance
from .folder import DataInfo, Sample, scan_folder, stratified_split, warn_split_problems
from .images import load_bands, load_image, to_rgb
from .loaders import LoadSkips, build_loader, default_num_workers
from .scan import scan_settings

if TYPE_CHECKING:
    from ..config import FinetuneConfig
    from ..models.info import BackboneInfo

__all__ = [
    "ImageFileDataset",
    "unaugmented",
    "dataset_info",
    "build_loader",
    "build_loaders",
    "scan_data",
    "build_datasets",
    "default_num_workers",
]


class _SoftTargets:
    """``set_targets``: per-sample target vectors that replace the labels (a teacher's mix,
    ``train.teacher``), returned by ``__getitem__`` in their place."""

    soft_targets = None  # (samples, classes) float tensor, or None: the labels

    def set_targets(self, targets) -> None:
        self.soft_targets = targets


class ImageFileDataset(_SoftTargets):
    """``(image_tensor, label)`` pairs from ``(path, label)`` samples.

    A file that fails to decode mid-run (a quick scan, or changed on disk after the scan) is
    replaced by the next sample with a warning naming it (``loaders.LoadSkips``: reported at the
    end of the epoch), unless ``strict``; an epoch never dies on one bad image.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable,
        *,
        strict: bool = False,
        cache=None,
        prepare: Callable | None = None,
        num_classes: int = 0,
        loader: Callable = load_image,
    ):
        self.num_classes = num_classes  # > 0: labels are tuples, returned as multi-hot vectors
        self.loader = loader  # load_image (RGB) or a multi-band reader
        self.samples = list(samples)
        self.transform = transform
        self.strict = strict
        self.cache = cache  # ImageCache of prepared images, or None
        self.prepare = prepare  # what the cache applied (eval resize/crop), for uncached files
        self.load_skips = LoadSkips()

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
            if i in self.load_skips.bad:  # failed before: the next one stands in, unread
                continue
            path, label = self.samples[i]
            try:
                image = self.transform(self._image(i))
            except Exception as e:  # decoders raise many types; the next sample stands in
                if self.strict:
                    raise DataError(f"{path}: unreadable image ({e}); remove or fix it, or "
                                    "drop --strict to skip it") from None  # fmt: skip
                self.load_skips.record(i, path, f"{type(e).__name__}: {e}")
                continue
            if self.soft_targets is not None:
                return image, self.soft_targets[i]
            if self.num_classes:
                import torch

                target = torch.zeros(self.num_classes)
                target[list(label)] = 1.0
                return image, target
            return image, label
        raise DataError("no readable image left in the dataset")


# bands of a PIL mode as the model sees it (palette and CMYK images are converted to RGB)
BAND_COUNTS = {"L": 1, "LA": 1, "P": 3, "RGB": 3, "RGBA": 3, "CMYK": 3, "I": 1, "F": 1}


def _check_bands(data: DataInfo, in_chans) -> None:
    """Multi-band files need ``in_chans`` and every file must have that many bands (1-band
    images are repeated); an RGB config must not meet multi-band files."""
    counts = {}
    for path, check in data.checks.items():
        if check.problem:
            continue
        match = re.match(r"(\d+)-band ", check.mode)
        counts[path] = (
            int(match.group(1)) if match else BAND_COUNTS.get(check.mode.split(";")[0], 3)
        )
    banded = sorted({n for n in counts.values() if n > 3})
    if in_chans in (None, 3):
        if banded:
            example = next(p for p, n in counts.items() if n == banded[-1])
            raise DataError(
                f"{example}: a {banded[-1]}-band image; an RGB model would see a "
                f"mangled version of it. Set --in-chans {banded[-1]} (data.in_chans)"
            )
        return
    short = [(p, n) for p, n in counts.items() if 1 < n < in_chans]
    if short:
        raise DataError(
            f"{short[0][0]}: {short[0][1]} bands, but --in-chans is {in_chans}; "
            f"{len(short)} files have fewer bands than that"
        )


def scan_data(dataset, cfg: "FinetuneConfig") -> DataInfo:
    """Classes and splits of a folder or CSV manifest (every image checked as deep as
    ``data.scan`` says) or of a torch Dataset; a one-line summary is emitted as an ``info``
    event. With the image cache on, a full scan reads and parses every file but leaves the
    decoding to the cache, which decodes each image before the first step anyway: the first run
    decodes each image once (``finetune.data.scan``)."""
    if not isinstance(dataset, (str, os.PathLike)):
        return _scan_dataset(dataset, cfg)
    scan = scan_folder
    if str(dataset).lower().endswith(".csv"):
        from .manifest import scan_csv as scan
    cached = cfg.data.cache_images != "none" and cfg.data.in_chans in (None, 3)
    with scan_settings(cfg.data.scan, decoded_later=cached) as done:
        data = scan(
            dataset,
            val_split=cfg.data.val_split,
            seed=cfg.train.seed,
            strict=cfg.data.strict,
            max_pixels=cfg.data.max_pixels,
        )
    _check_bands(data, cfg.data.in_chans)
    data = _fold_val(data, cfg)
    problems = [
        f"{n} {what}"
        for n, what in (
            (len(data.skipped), "unreadable files skipped"),
            (len(data.suspicious), "suspicious"),
            (len(data.duplicates), "duplicated across splits"),
        )
        if n
    ]
    emit(
        "info",
        f"data {data.root} ({data.layout}): {data.num_classes} classes; "
        + "; ".join(f"{split} {sum(c)}" for split, c in data.counts().items())
        + "".join(f"; {p}" for p in problems)
        + f" (scan {done.level} {data.scan_seconds:.1f} s, {data.cache_hits} cached; "
        "'finetune scan' shows the full report)",
        warn=bool(problems),
    )
    return data


def _scan_dataset(dataset, cfg: "FinetuneConfig") -> DataInfo:
    data = dataset_info(dataset, val_split=cfg.data.val_split, seed=cfg.train.seed)
    warn_split_problems(data)
    data = _fold_val(data, cfg)
    emit(
        "info",
        f"data {data.root}: {data.num_classes} classes; train {len(data.train)}; val "
        f"{len(data.val)}"
        + (f"; test {len(data.test)}" if data.test else "")
        + (f"; {len(data.skipped)} unreadable samples skipped" if data.skipped else ""),
        warn=bool(data.skipped),
    )
    return data


def _fold_val(data: DataInfo, cfg: "FinetuneConfig") -> DataInfo:
    """``data.train_on_val``: the validation images join the training split (a refit of a chosen
    config on every labelled image but the test split), which leaves no validation split."""
    if not cfg.data.train_on_val or not data.val:
        return data
    return dataclasses.replace(data, train=data.train + data.val, val=())


def dataset_info(dataset, *, val_split: float, seed: int) -> DataInfo:
    """``DataInfo`` of a torch Dataset: labels from its ``targets`` (else read item by item),
    class names from ``classes``, its own ``splits`` when it has them (Hugging Face data sets,
    shards), else a stratified seeded ``val_split``; ``skipped`` (bad samples a shard scan found)
    is kept. Samples are ``(index, label)``.

    Example:
        >>> dataset_info(load_shards("shards/"), val_split=0.2, seed=0).counts()  # doctest: +SKIP
        {'train': [40, 40], 'val': [10, 10]}
    """
    import torch

    if not isinstance(dataset, torch.utils.data.Dataset):
        raise TypeError(
            f"dataset must be a folder path or a torch Dataset, got {type(dataset).__name__}"
        )
    if len(dataset) == 0:
        raise DataError(f"{type(dataset).__name__} is empty; a dataset needs labelled images")
    labels = getattr(dataset, "targets", None)
    if labels is None:
        labels = [int(dataset[i][1]) for i in range(len(dataset))]
    labels = [int(y) for y in labels]
    classes = tuple(getattr(dataset, "classes", None) or [str(i) for i in range(max(labels) + 1)])
    bad = sorted({y for y in labels if not 0 <= y < len(classes)})
    if bad:
        raise DataError(
            f"{type(dataset).__name__}: labels {bad[:5]} are outside 0..{len(classes) - 1}"
            f" ({len(classes)} classes: {', '.join(classes[:5])}...)"
        )
    if len(set(labels)) < 2:
        raise DataError(
            f"{type(dataset).__name__}: all images have label {labels[0]}; a "
            "classifier needs at least two classes"
        )
    # a dataset with its own splits (Hugging Face data sets: finetune.data.hf) keeps them
    splits = getattr(dataset, "splits", None) or {"train": range(len(labels))}
    train = [(i, labels[i]) for i in splits["train"]]
    if splits.get("val"):
        train_idx, val_idx = train, [(i, labels[i]) for i in splits["val"]]
    else:
        train_idx, val_idx = stratified_split(train, val_split, seed)
    return DataInfo(
        root=str(getattr(dataset, "source", "")) or f"<{type(dataset).__name__}>",
        layout="dataset",
        classes=classes,
        train=tuple(train_idx),
        val=tuple(val_idx),
        test=tuple((i, labels[i]) for i in splits.get("test", ())),
        skipped=tuple(getattr(dataset, "skipped", ())),
    )


def build_datasets(
    dataset,
    data: DataInfo,
    cfg: "FinetuneConfig",
    info: "BackboneInfo",
    *,
    train_augment: bool = True,
):
    """(train, val, test or None) datasets with the backbone's preprocessing; training images
    get the evaluation transform when ``train_augment`` is False (cached features)."""
    from .augment import build_transform, resolve_img_size
    from .cache import ImageCache, cache_side, downsizer, eval_preparer, split_transform

    train_tf = build_transform(info, cfg.data, training=train_augment, uint8=train_augment)
    eval_tf = build_transform(info, cfg.data, training=False)
    if data.layout == "dataset":  # samples are (index, label) into the user's Dataset
        strict = cfg.data.strict
        return (
            _IndexedDataset(dataset, [i for i, _ in data.train], train_tf, strict),
            _IndexedDataset(dataset, [i for i, _ in data.val], eval_tf, strict),
            _IndexedDataset(dataset, [i for i, _ in data.test], eval_tf, strict)
            if data.test
            else None,
        )
    mode, size = cfg.data.cache_images, resolve_img_size(info, cfg.data.img_size)
    common = dict(strict=cfg.data.strict, num_classes=data.num_classes if data.multilabel else 0)
    if cfg.data.in_chans not in (None, 3):  # multi-band: float tensors, no uint8 image cache
        from functools import partial

        from .augment import build_band_transform

        bands = dict(loader=partial(load_bands, channels=cfg.data.in_chans), **common)
        train_bt = build_band_transform(info, cfg.data, training=train_augment)
        eval_bt = build_band_transform(info, cfg.data, training=False)
        return (
            ImageFileDataset(data.train, train_bt, **bands),
            ImageFileDataset(data.val, eval_bt, **bands),
            ImageFileDataset(data.test, eval_bt, **bands) if data.test else None,
        )

    def make_eval(samples):
        if mode == "none":
            return ImageFileDataset(samples, eval_tf, **common)
        pil, tensor = split_transform(eval_tf)
        cache = ImageCache.build(
            [p for p, _ in samples], prepare=eval_preparer(pil), mode=mode, side=size
        )
        return ImageFileDataset(samples, tensor, cache=cache, prepare=pil, **common)

    def make_train(samples):
        if not train_augment:
            return make_eval(samples)
        if mode == "none":
            return ImageFileDataset(samples, train_tf, **common)
        side = cache_side(size, info.crop_pct)
        cache = ImageCache.build(
            [p for p, _ in samples], prepare=downsizer(side), mode=mode, side=side
        )
        return ImageFileDataset(samples, train_tf, cache=cache, **common)

    return (
        make_train(data.train),
        make_eval(data.val),
        make_eval(data.test) if data.test else None,
    )


def unaugmented(dataset, info: "BackboneInfo", cfg: "FinetuneConfig"):
    """A shallow copy of a training ``dataset`` that gives the same (cached) images through the
    evaluation transform, without augmentation: what a linear probe is fitted on. None for a
    dataset without a ``transform`` to replace.

    Example:
        >>> clean = unaugmented(loaders["train"].dataset, built.info, cfg)  # doctest: +SKIP
    """
    import copy

    from .augment import build_band_transform, build_transform

    if not hasattr(dataset, "transform"):
        return None
    view = copy.copy(dataset)
    bands = cfg.data.in_chans not in (None, 3)
    make = build_band_transform if bands else build_transform
    view.transform = make(info, cfg.data, training=False)
    return view


class _IndexedDataset(_SoftTargets):
    """A subset of a user's dataset with our transform applied to PIL images. An item that fails
    to load (a shard's damaged image, a Hugging Face row that does not decode) is replaced by the
    next one and reported, as ``ImageFileDataset`` does; ``strict`` raises instead."""

    def __init__(self, dataset, indices: list[int], transform, strict: bool = False):
        self.dataset, self.indices, self.transform = dataset, indices, transform
        self.strict, self.load_skips = strict, LoadSkips()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        import torch

        for attempt in range(len(self.indices)):
            i = (index + attempt) % len(self.indices)
            if i in self.load_skips.bad:
                continue
            try:
                image, label = self.dataset[self.indices[i]]
                if not isinstance(image, torch.Tensor):
                    image = self.transform(to_rgb(image))
                if self.soft_targets is not None:
                    return image, self.soft_targets[i]
                return image, int(label)
            except Exception as e:  # the user's or the data set's own loader: any type
                name = _item_name(self.dataset, self.indices[i])
                if self.strict:
                    raise DataError(f"{name}: unreadable image ({e}); remove or fix it, or "
                                    "drop --strict to skip it") from None  # fmt: skip
                self.load_skips.record(i, name, f"{type(e).__name__}: {e}")
        raise DataError(f"no readable image left in {self.dataset!r}")


def _item_name(dataset, index: int) -> str:
    """What names item ``index`` in a message: the dataset's own ``item_name`` (a shard and its
    key), else ``Dataset[index]``."""
    namer = getattr(dataset, "item_name", None)
    return namer(index) if namer is not None else f"{type(dataset).__name__}[{index}]"


def build_loaders(
    dataset,
    data: DataInfo,
    cfg: "FinetuneConfig",
    info: "BackboneInfo",
    *,
    pin_memory: bool = False,
    world: int = 1,
    rank: int = 0,
) -> dict:
    """``{"train", "val", "test"}`` loaders of a run (splits without images left out). With
    ``cache_features`` the training split gets the evaluation transform and no shuffle: its
    features are computed once."""
    cached = cfg.train.cache_features
    splits = dict(
        zip(
            ("train", "val", "test"),
            build_datasets(dataset, data, cfg, info, train_augment=not cached),
        )
    )
    _, sample_weights = class_balance(data, cfg)
    return {
        name: build_loader(
            ds,
            batch_size=cfg.data.batch_size,
            training=name == "train" and not cached,
            num_workers=cfg.data.num_workers,
            seed=cfg.train.seed,
            pin_memory=pin_memory,
            sample_weights=sample_weights if name == "train" else None,
            world=world,
            rank=rank,
        )
        for name, ds in splits.items()
        if ds
    }
