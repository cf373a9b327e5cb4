"""``predict``: apply a run directory to images, with the evaluation transform training used.

``load_for_inference`` + ``image_logits`` are the one path from image files (or PIL images) to
logits, with optional test-time augmentation; ``predict`` and ``finetune.evaluation.evaluate``
both use it, so they preprocess exactly as the run's validation did.

Example:
    >>> predict("runs/my-run", ["photos/"], top_k=3)[0]["label"]  # doctest: +SKIP
    >>> predict("runs/my-run", "photo.jpg", tta=True)[0]["prob"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from PIL import Image
from torch import nn

from ._io import USER_TENSORS
from .config import DataConfig, FinetuneConfig
from .data.augment import build_eval_transform
from .data.images import load_bands, load_image, to_rgb, walk_images
from .data.threads import thread_map
from .errors import ConfigError
from .events import Progress
from .models.info import BackboneInfo
from .train.checkpoint import load_run
from .train.runtime import is_cnn, resolve_device

__all__ = ["predict", "LoadedRun", "load_for_inference", "image_logits"]

ImageInput = Union[str, os.PathLike, Image.Image]


@dataclass(frozen=True)
class LoadedRun:
    """A run directory ready to score images: the model, its classes and its preprocessing."""

    run_dir: Path
    model: nn.Module
    config: dict
    labels: tuple[str, ...]
    transform: Callable
    read: Callable  # path -> what ``transform`` takes (PIL RGB image or band tensor)
    channels: int
    device: str
    multilabel: bool
    thresholds: Optional[list[float]]  # multi-label: per-label thresholds chosen on validation
    memory_format: torch.memory_format = torch.contiguous_format  # channels_last for a CNN


def load_for_inference(run_dir: str | os.PathLike, device: str = "cpu") -> LoadedRun:
    """Rebuild a run's model (``load_run``) and its evaluation transform.

    Example:
        >>> run = load_for_inference("runs/my-run")  # doctest: +SKIP
        >>> run.labels  # doctest: +SKIP
        ('cat', 'dog')
    """
    device = str(resolve_device(device))  # "auto" -> cuda if available, else cpu
    model, config = load_run(run_dir, device=device)
    ft = config.get("finetune", {})
    if ft.get("preprocessing") == USER_TENSORS:
        raise ValueError(
            f"{run_dir} was trained on tensors your Dataset prepared, so predict cannot know the "
            "preprocessing for image files: load the model with finetune.load_run and give it "
            "tensors prepared the same way"
        )
    labels = config.get("label_names") or [str(i) for i in range(config["num_classes"])]
    pretrained_cfg = config["pretrained_cfg"]
    channels = int(pretrained_cfg["input_size"][0])
    info = BackboneInfo.from_pretrained_cfg(pretrained_cfg)
    multilabel = bool(ft.get("multi_label"))
    # as training does: channels_last convolutions, 1.7x faster here (tf_efficientnet_lite0 at
    # 224 px on 2 CPU cores: 16 against 27 ms per image, batch 32)
    memory_format = torch.channels_last if is_cnn(model) else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    return LoadedRun(
        run_dir=Path(run_dir),
        model=model,
        config=config,
        labels=tuple(labels),
        transform=build_eval_transform(info, _data_config(run_dir, pretrained_cfg)),
        read=load_image if channels == 3 else partial(load_bands, channels=channels),
        channels=channels,
        device=device,
        multilabel=multilabel,
        thresholds=ft.get("thresholds") if multilabel else None,
        memory_format=memory_format,
    )


def image_logits(
    run: LoadedRun,
    images: Sequence[ImageInput],
    *,
    batch_size: int = 32,
    tta: bool = False,
    title: str = "Predicting",
) -> tuple[list[int], torch.Tensor]:
    """Logits of ``images`` (files or PIL images) as ``(kept, logits)``: the indices of the
    images that could be read (an unreadable file is skipped with a warning naming it) and a
    float CPU tensor (len(kept), classes). One ``Progress`` update per batch.

    ``tta``: the softmax (sigmoid for multi-label) of each image and of its horizontal flip are
    averaged; the logits returned are then the log of that average (logit for multi-label), so
    ``softmax``/``sigmoid`` of them gives the averaged probabilities.

    Example:
        >>> kept, logits = image_logits(run, ["a.png", "b.png"], tta=True)  # doctest: +SKIP
    """
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: must be at least 1")
    kept: list[int] = []
    out: list[torch.Tensor] = []
    # decoding and resizing run in threads (PIL releases the GIL), a few batches ahead of the
    # model, so the next batch is ready when the forward pass ends
    prepared = thread_map(partial(_preprocess, run), images, window=4 * batch_size)
    with Progress(title, total=len(images)) as bar:
        for start in range(0, len(images), batch_size):
            index, tensors = [], []
            for i in range(start, min(start + batch_size, len(images))):
                tensor = next(prepared)
                if tensor is not None:
                    index.append(i)
                    tensors.append(tensor)
            if tensors:
                names = [_name(images[i], i) for i in index]
                out.append(_batch_logits(run, torch.stack(tensors), tta, names))
                kept += index
            bar.update(min(start + batch_size, len(images)), force=True)
    logits = torch.cat(out) if out else torch.zeros(0, len(run.labels))
    return kept, logits


def _preprocess(run: LoadedRun, item: ImageInput) -> Optional[torch.Tensor]:
    if isinstance(item, Image.Image):
        if run.channels != 3:
            raise ValueError(
                f"{run.run_dir} takes {run.channels}-band images: give file paths (PIL images "
                "are RGB only)"
            )
        return run.transform(to_rgb(item))
    try:
        return run.transform(run.read(item))
    except Exception as e:  # PIL raises many types; name the file and go on
        warnings.warn(f"skipping unreadable image {item}: {type(e).__name__}: {e}", stacklevel=4)
        return None


def _batch_logits(run: LoadedRun, x: torch.Tensor, tta: bool, names: list) -> torch.Tensor:
    x = x.to(run.device).contiguous(memory_format=run.memory_format)
    with torch.inference_mode():
        views = [run.model(x).float().cpu()]
        # the mirror of the preprocessed tensor, not a second transform of the mirrored image:
        # resize and centre crop commute with the mirror (up to a crop's odd pixel)
        if tta:
            views.append(run.model(x.flip(-1)).float().cpu())
    for logits in views:
        if not bool(torch.isfinite(logits).all()):
            row = int((~torch.isfinite(logits)).any(1).nonzero()[0])
            raise ValueError(
                f"{run.run_dir}: the model gives non-finite outputs (e.g. for "
                f"{names[row]}): its weights are damaged or the run diverged; "
                "retrain with a lower --lr"
            )
    if not tta:
        return views[0]
    if run.multilabel:
        probs = torch.stack([v.double().sigmoid() for v in views]).mean(0)
        return torch.logit(probs, eps=1e-12).float()
    probs = torch.stack([v.double().softmax(-1) for v in views]).mean(0)
    return probs.clamp_min(1e-300).log().float()  # no -inf where a probability underflows


def predict(
    run_dir: str | os.PathLike,
    inputs: ImageInput | Sequence[ImageInput],
    *,
    top_k: int = 1,
    device: str = "cpu",
    batch_size: int = 32,
    tta: bool = False,
) -> list[dict[str, Any]]:
    """Top-k labels and probabilities for images (folders are walked recursively).

    ``inputs``: a path, a folder, a PIL image, or a list of them; a PIL image's record has
    ``"path": "<image N>"`` (N: its position in ``inputs``). Uses the run's evaluation
    preprocessing. Returns one record per image: ``{"path", "label", "prob", "label_2",
    "prob_2", ...}``; for a multi-label run ``{"path", "labels": "a;b", "prob_<label>": ...}``
    with the thresholds chosen on validation. An unreadable image is skipped with a warning
    naming it. ``device``: cpu, cuda or auto. ``tta``: average each image with its mirror image.

    Example:
        >>> predict("runs/my-run", ["photos/"], top_k=3)[0]["label"]  # doctest: +SKIP
    """
    run = load_for_inference(run_dir, device)
    if isinstance(inputs, (str, os.PathLike, Image.Image)):
        inputs = [inputs]
    items: list[ImageInput] = []
    names: list[str] = []
    for position, item in enumerate(inputs):
        if isinstance(item, Image.Image):
            items.append(item)
            names.append(_name(item, position))
        else:
            for path in walk_images([item]):
                items.append(path)
                names.append(str(path))
    kept, logits = image_logits(run, items, batch_size=batch_size, tta=tta)
    kept_names = [names[i] for i in kept]
    if run.thresholds is not None:  # multi-label: every label over its threshold
        return _multilabel_records(kept_names, logits.sigmoid(), run.labels, run.thresholds)
    k = max(1, min(top_k, len(run.labels)))
    return _topk_records(kept_names, logits.softmax(-1), run.labels, k)


def _name(item: ImageInput, position: int) -> str:
    return f"<image {position}>" if isinstance(item, Image.Image) else str(item)


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
