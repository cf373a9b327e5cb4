"""Hugging Face ``datasets`` as training data: ``--data hf:PATH_OR_NAME[:split]``.

``PATH_OR_NAME`` is a folder written by ``save_to_disk`` (a ``DatasetDict`` or one ``Dataset``),
a parquet file or a folder of them, or a hub data set name found in the local cache (offline).
The image column is the first ``Image`` feature (or ``--image-column``), the label column the
first ``ClassLabel`` (or ``--label-column``; its ``names`` are the classes). The data set's own
splits are used (``train``; ``validation``/``valid``/``val``; ``test``); without a validation
split a stratified, seeded ``val_split`` of train is held out; ``:split`` picks one split as the
training data. Arrow data is memory-mapped: memory stays bounded however large the set, and
only the images of a batch are decoded.

Example:
    >>> data = load_hf("hf:/data/beans", image_column=None, label_column=None)  # doctest: +SKIP
    >>> data.classes, {k: len(v) for k, v in data.splits.items()}  # doctest: +SKIP
    (('angular_leaf_spot', 'bean_rust', 'healthy'), {'train': 1034, 'val': 133, 'test': 128})
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from ..errors import DataError, did_you_mean

__all__ = ["HF_PREFIX", "HfImages", "absolute_hf", "is_hf", "load_hf"]

HF_PREFIX = "hf:"
SPLIT_NAMES = {"train": "train", "validation": "val", "valid": "val", "val": "val", "test": "test"}


def is_hf(data: Any) -> bool:
    """True for a ``hf:`` data spec."""
    return isinstance(data, str) and data.startswith(HF_PREFIX)


def absolute_hf(spec: str) -> str:
    """``hf:data/beans:train`` -> ``hf:/abs/data/beans:train`` when the path is local, so that
    ``--resume`` finds it from anywhere."""
    body = spec[len(HF_PREFIX) :]
    head, sep, tail = body.rpartition(":")
    path, split = (head, sep + tail) if sep and head and "/" not in tail else (body, "")
    if Path(path).expanduser().exists():
        path = str(Path(path).expanduser().resolve())
    return f"{HF_PREFIX}{path}{split}"


class HfImages(torch.utils.data.Dataset):
    """One map-style dataset over the splits of a Hugging Face data set: item ``i`` is
    ``(PIL image, label)``; ``splits`` maps train/val/test to item indices, ``targets`` holds
    every label (read from the label column, no image decoded) and ``classes`` the names."""

    def __init__(self, parts: dict[str, Any], image_column: str, label_column: str,
                 classes: tuple[str, ...], source: str):  # fmt: skip
        self.parts = list(parts.items())  # [(split, datasets.Dataset)]
        self.image_column, self.label_column = image_column, label_column
        self.classes, self.source = classes, source
        self.offsets, self.splits, self.targets = [], {}, []
        start = 0
        for split, part in self.parts:
            self.offsets.append(start)
            self.splits[split] = list(range(start, start + len(part)))
            self.targets += [int(y) for y in part[label_column]]
            start += len(part)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        for (split, part), start in zip(reversed(self.parts), reversed(self.offsets)):
            if index >= start:
                row = part[index - start]
                return row[self.image_column], int(row[self.label_column])
        raise IndexError(index)

    def __repr__(self) -> str:
        return f"HfImages({self.source})"


def load_hf(spec: str, *, image_column: Optional[str] = None,
            label_column: Optional[str] = None) -> HfImages:  # fmt: skip
    """Open ``hf:PATH_OR_NAME[:split]`` (see the module docstring)."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"--data {spec} needs the datasets package: "
                        "pip install 'finetune[hf]'") from None  # fmt: skip
    source, split = _parse(spec)
    loaded = _open(datasets, source)
    if isinstance(loaded, datasets.DatasetDict):
        if split is not None:
            if split not in loaded:
                raise DataError(f"--data {spec}: no split '{split}'; the splits are "
                                f"{', '.join(loaded)}{did_you_mean(split, loaded)}")  # fmt: skip
            parts = {"train": loaded[split]}
        else:
            parts = {SPLIT_NAMES[k]: v for k, v in loaded.items() if k in SPLIT_NAMES}
            if "train" not in parts:
                raise DataError(f"--data {spec}: no train split (splits: {', '.join(loaded)}); "
                                f"name the one to train on: {spec}:SPLIT")  # fmt: skip
    else:
        parts = {"train": loaded}
    first = parts["train"]
    image_column = _column(first, image_column, datasets.Image, "image", spec)
    label_column = _column(first, label_column, datasets.ClassLabel, "label", spec)
    feature = first.features[label_column]
    classes = (
        tuple(feature.names)
        if isinstance(feature, datasets.ClassLabel)
        else tuple(str(v) for v in sorted(set(first[label_column])))
    )
    return HfImages(parts, image_column, label_column, classes, source)


def _parse(spec: str) -> tuple[str, Optional[str]]:
    body = spec[len(HF_PREFIX) :]
    source, split = body, None
    head, sep, tail = body.rpartition(":")
    if sep and head and "/" not in tail and not Path(body).exists():
        source, split = head, tail
    return source, split


def _open(datasets, source: str):
    path = Path(source).expanduser()
    if path.is_dir() and any(path.glob("*.json")) and not any(path.glob("*.parquet")):
        return datasets.load_from_disk(str(path))  # save_to_disk: dataset_info.json, state.json
    if path.suffix == ".parquet" or (path.is_dir() and any(path.rglob("*.parquet"))):
        files = [str(path)] if path.is_file() else sorted(str(p) for p in path.rglob("*.parquet"))
        return datasets.load_dataset("parquet", data_files=files)
    if path.exists():
        raise DataError(f"--data hf:{source}: not a save_to_disk folder or parquet data")
    try:  # a hub name: the local cache (HF_HUB_OFFLINE=1 needs no network)
        return datasets.load_dataset(source)
    except Exception as e:  # datasets raises many types for a name it cannot find
        raise DataError(
            f"--data hf:{source}: not a folder here and not loadable as a hub data "
            f"set ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
        ) from None


def _column(part, name: Optional[str], kind, fallback: str, spec: str) -> str:
    features = part.features
    if name is not None:
        if name not in features:
            raise DataError(f"--data {spec}: no column '{name}'; the columns are "
                            f"{', '.join(features)}{did_you_mean(name, features)}")  # fmt: skip
        return name
    typed = [k for k, v in features.items() if isinstance(v, kind)]
    if typed:
        return typed[0]
    if fallback in features:
        return fallback
    option = "--image-column" if fallback == "image" else "--label-column"
    raise DataError(f"--data {spec}: no {kind.__name__} column found among "
                    f"{', '.join(features)}; name it with {option}")  # fmt: skip
