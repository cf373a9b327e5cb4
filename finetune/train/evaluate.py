"""The end of a run: keep the best epoch, restore it (merging adapters), score val and test.

Example:
    >>> save_best = best_saver(run_dir, built, cfg)  # doctest: +SKIP
    >>> final, diff = restore_best(built, cfg, run_dir, device, loaders)  # doctest: +SKIP
    >>> metrics = evaluate_splits(Trainer(final, policy=p, task=task), loaders, data, 3)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from .._io import WEIGHTS_NAME
from ..config import FinetuneConfig
from ..data.folder import DataInfo
from ..events import emit
from .build import BuiltModel
from .checkpoint import save_weights
from .metrics import best_thresholds, classification_report, multilabel_report
from .trainer import Trainer

__all__ = ["best_saver", "restore_best", "evaluate_splits"]


def best_saver(run_dir: Path, built: BuiltModel, cfg: FinetuneConfig) -> Callable:
    """How the best epoch is kept: the whole base model, or (peft) the adapter and head."""
    if cfg.adapter.peft != "none":
        from ..models.adapters import save_adapter

        return lambda model, epoch: save_adapter(model, run_dir)
    metadata = {"architecture": built.info.architecture}
    return lambda model, epoch: save_weights(run_dir, built.base, {**metadata, "epoch": str(epoch)})


def restore_best(
    built: BuiltModel, cfg: FinetuneConfig, run_dir: Path, device: torch.device, loaders: dict
) -> tuple[nn.Module, Optional[float]]:
    """Load the best epoch into the base model; merge adapters into it (peft) and write the
    merged ``model.safetensors``. Returns (base model, max |merged - unmerged| logit or None)."""
    from safetensors.torch import load_model

    net, base, info = built.net, built.base, built.info
    if cfg.adapter.peft == "none":
        load_model(base, str(run_dir / WEIGHTS_NAME), device=str(device))
        return base, None
    from ..models.adapters import load_adapter, merge_adapter

    load_adapter(net, run_dir)
    images = next(iter(loaders.get("val") or loaders["train"]))[0][:8].to(device)
    if images.dtype == torch.uint8:  # training batches stop before normalisation
        mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1) * 255
        std = torch.tensor(info.std, device=device).view(1, -1, 1, 1) * 255
        images = (images.float() - mean) / std
    net.eval()
    with torch.inference_mode():
        unmerged = net(images).float()
        merged_model = merge_adapter(net)
        diff = float((merged_model(images).float() - unmerged).abs().max())
    if os.environ.get("RANK", "0") == "0":  # with torchrun every rank merges, rank 0 writes
        save_weights(
            run_dir,
            merged_model,
            {"architecture": info.architecture, "merged_adapter": cfg.adapter.peft},
        )
    return merged_model, diff


def evaluate_splits(
    evaluator: Trainer, loaders: dict, data: DataInfo, best_epoch: int, *, prefix: str = ""
) -> dict[str, Any]:
    """Reports on val and test, each emitted as a ``report`` event. Multi-label: per-label
    thresholds that maximise F1 on val (0.5 without val data) are chosen first and applied to
    both, and returned as ``thresholds``."""
    out: dict[str, Any] = {}
    logits = {s: evaluator.evaluate(loaders[s])[1:] for s in ("val", "test") if s in loaders}
    if data.multilabel:
        out["thresholds"] = (
            best_thresholds(logits["val"][0].sigmoid(), logits["val"][1])
            if "val" in logits
            else [0.5] * data.num_classes
        )
    for split, (split_logits, targets) in logits.items():
        if data.multilabel:
            out[split] = multilabel_report(split_logits, targets, data.classes, out["thresholds"])
        else:
            out[split] = classification_report(split_logits, targets, data.classes)
        emit(
            "report",
            report=out[split],
            multilabel=data.multilabel,
            title=f"{prefix}{split} (best epoch {best_epoch})",
        )
    return out
