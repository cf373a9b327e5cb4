"""``predict``: apply a run directory to images, with the evaluation transform training used.

Example:
    >>> predict("runs/my-run", ["photos/"], top_k=3)[0]["label"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from functools import partial
from typing import Any, Sequence

import torch

from ._io import USER_TENSORS
from .config import DataConfig, FinetuneConfig
from .data.augment import build_eval_transform
from .data.images import load_bands, load_image, walk_images
from .errors import ConfigError
from .models.info import BackboneInfo
from .train.checkpoint import load_run
from .train.runtime import resolve_device

__all__ = ["predict"]


def predict(
    run_dir: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    *,
    top_k: int = 1,
    device: str = "cpu",
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Top-k labels and probabilities for images (folders are walked recursively).

    Uses the run's evaluation preprocessing. Returns one record per image:
    ``{"path", "label", "prob", "label_2", "prob_2", ...}``; for a multi-label run
    ``{"path", "labels": "a;b", "prob_<label>": ...}`` with the thresholds chosen on validation.
    An unreadable image is skipped with a warning naming it. ``device``: cpu, cuda or auto.

    Example:
        >>> predict("runs/my-run", ["photos/"], top_k=3)[0]["label"]  # doctest: +SKIP
    """
    device = str(resolve_device(device))  # "auto" -> cuda if available, else cpu
    model, config = load_run(run_dir, device=device)
    if config.get("finetune", {}).get("preprocessing") == USER_TENSORS:
        raise ValueError(
            f"{run_dir} was trained on tensors your Dataset prepared, so predict cannot know the "
            "preprocessing for image files: load the model with finetune.load_run and give it "
            "tensors prepared the same way"
        )
    labels = config.get("label_names") or [str(i) for i in range(config["num_classes"])]
    pretrained_cfg = config["pretrained_cfg"]
    channels = int(pretrained_cfg["input_size"][0])
    info = BackboneInfo.from_pretrained_cfg(pretrained_cfg)
    transform = build_eval_transform(info, _data_config(run_dir, pretrained_cfg))
    read = load_image if channels == 3 else partial(load_bands, channels=channels)
    paths = list(walk_images(inputs))
    k = max(1, min(top_k, len(labels)))
    ft = config.get("finetune", {})
    thresholds = ft.get("thresholds") if ft.get("multi_label") else None
    records: list[dict[str, Any]] = []
    for start in range(0, len(paths), batch_size):
        chunk, tensors = [], []
        for path in paths[start : start + batch_size]:
            try:
                tensors.append(transform(read(path)))
                chunk.append(path)
            except Exception as e:  # PIL raises many types; name the file and go on
                warnings.warn(
                    f"skipping unreadable image {path}: {type(e).__name__}: {e}", stacklevel=2
                )
        if not chunk:
            continue
        with torch.inference_mode():
            logits = model(torch.stack(tensors).to(device)).float().cpu()
        if not bool(torch.isfinite(logits).all()):
            bad = chunk[int((~torch.isfinite(logits)).any(1).nonzero()[0])]
            raise ValueError(
                f"{run_dir}: the model gives non-finite outputs (e.g. for {bad}): "
                "its weights are damaged or the run diverged; retrain with a lower --lr"
            )
        if thresholds is not None:  # multi-label: every label over its threshold
            records += _multilabel_records(chunk, logits.sigmoid(), labels, thresholds)
        else:
            records += _topk_records(chunk, logits.softmax(-1), labels, k)
    return records


def _data_config(run_dir, pretrained_cfg: dict) -> DataConfig:
    """The data section the run trained with (the one config path); a timm run directory that
    finetune did not write gets the equivalent from its ``pretrained_cfg``."""
    try:
        return FinetuneConfig.resolve(resume=run_dir).data
    except ConfigError:
        channels, size = int(pretrained_cfg["input_size"][0]), int(pretrained_cfg["input_size"][-1])
        return DataConfig(img_size=size, in_chans=None if channels == 3 else channels)


def _topk_records(paths, probs, labels, k: int) -> list[dict[str, Any]]:
    records = []
    top_p, top_i = probs.topk(k, dim=-1)
    for path, ps, idx in zip(paths, top_p.tolist(), top_i.tolist()):
        record: dict[str, Any] = {"path": str(path)}
        for rank, (p, i) in enumerate(zip(ps, idx), start=1):
            suffix = "" if rank == 1 else f"_{rank}"
            record[f"label{suffix}"] = labels[i]
            record[f"prob{suffix}"] = round(p, 6)
        records.append(record)
    return records


def _multilabel_records(paths, probs, labels, thresholds) -> list[dict[str, Any]]:
    records = []
    for path, row in zip(paths, probs.tolist()):
        chosen = [name for name, p, t in zip(labels, row, thresholds) if p >= t]
        record: dict[str, Any] = {"path": str(path), "labels": ";".join(chosen)}
        record.update({f"prob_{name}": round(p, 6) for name, p in zip(labels, row)})
        records.append(record)
    return records
