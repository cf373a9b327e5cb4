"""What the Trainer optimises: the loss for a task, and timm ``Mixup`` when it is on.

Example:
    >>> loss = build_loss(task, label_smoothing=0.1, device=torch.device("cpu"))  # doctest: +SKIP
    >>> build_mixup(cfg.train, cfg.optim, task) is None  # mixup and cutmix off  # doctest: +SKIP
    True
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..config import OptimConfig, TrainConfig
from .runtime import Task

__all__ = ["build_loss", "build_mixup", "cross_entropy", "soft_cross_entropy", "target_classes"]


def build_loss(task: Task, *, label_smoothing: float, device: torch.device):
    """Cross-entropy (class weights, label smoothing); per-label BCE for multi-label tasks, its
    targets smoothed towards 0.5 and ``class_weights`` as its ``pos_weight``. Single-label
    targets may be class indices or rows of class probabilities (mixup, a teacher's mix: already
    smoothed, so only the class weights apply)."""
    weight = task.class_weights.to(device) if task.class_weights is not None else None
    if task.multilabel:
        bce = nn.BCEWithLogitsLoss(pos_weight=weight)
        return lambda logits, t: bce(logits, t * (1 - label_smoothing) + label_smoothing / 2)
    return partial(cross_entropy, weight=weight, label_smoothing=label_smoothing)


def cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Single-label cross-entropy of class indices (smoothed, weighted) or of rows of class
    probabilities (mixup, a teacher's mix: already smoothed, so only ``weight`` applies).

    Example:
        >>> round(cross_entropy(torch.zeros(1, 2), torch.tensor([0])).item(), 4)  # log 2
        0.6931
    """
    if targets.ndim == 2:
        return soft_cross_entropy(logits, targets, weight=weight)
    return nn.functional.cross_entropy(logits, targets, weight=weight,
                                       label_smoothing=label_smoothing)  # fmt: skip


def soft_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, *, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy against rows of class probabilities, weighted as ``nn.CrossEntropyLoss``
    weighs class indices: each class's term times its weight, over the summed weights of the
    targets, so a one-hot row gives exactly the index loss. (torch's own probability-target
    loss divides by the batch size instead, which changes the loss scale with the weights.)

    Example:
        >>> round(soft_cross_entropy(torch.zeros(1, 2), torch.tensor([[0.5, 0.5]])).item(), 4)
        0.6931
    """
    nll = -targets * torch.log_softmax(logits.float(), dim=-1)
    if weight is None:
        return nll.sum(-1).mean()
    return (nll * weight).sum() / (targets * weight).sum()


def build_mixup(train: TrainConfig, optim: OptimConfig, task: Task):
    """timm ``Mixup`` when mixup or cutmix is on (it smooths the mixed labels itself), else
    None."""
    if not (train.mixup or train.cutmix):
        return None
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=train.mixup,
        cutmix_alpha=train.cutmix,
        label_smoothing=optim.label_smoothing,
        num_classes=task.num_classes,
        multi_label=task.multilabel,
    )


def target_classes(targets: torch.Tensor) -> torch.Tensor:
    """Class indices of single-label targets: soft targets (a teacher's mix, ``train.teacher``)
    give their most likely class."""
    return targets.argmax(1) if targets.ndim == 2 else targets
