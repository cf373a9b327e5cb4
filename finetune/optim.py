"""Parameter groups, optimizer and the per-step LR schedule.

Only trainable parameters reach the optimizer. Biases, norm weights and other 1-D parameters get
no weight decay (timm ``param_groups_weight_decay``, as nanoGPT's ``p.dim() >= 2`` rule), nor do
the parameters a timm model lists in ``no_weight_decay()`` (pos_embed, cls_token). The schedule is
linear warmup then cosine decay, stepped once per optimizer step; a group's ``lr_scale`` multiplies
its LR (timm scheduler semantics).

Example:
    >>> opt = build_optimizer(model, OptimConfig(lr=1e-3))  # doctest: +SKIP
    >>> sched = build_scheduler(opt, OptimConfig(), steps_per_epoch=50, epochs=5)  # doctest: +SKIP
"""
from __future__ import annotations

import torch
from torch import nn

from .config import OptimConfig

__all__ = ["build_param_groups", "build_optimizer", "build_scheduler"]


def build_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    from timm.optim import param_groups_weight_decay

    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=skip)
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("no trainable parameters: the freezing policy froze everything")
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = build_param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, *, steps_per_epoch: int,
                    epochs: int):
    """timm ``CosineLRScheduler`` in optimizer steps; call ``step_update(step)`` after each step."""
    from timm.scheduler import CosineLRScheduler

    total = max(1, steps_per_epoch * epochs)
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total - warmup),
        lr_min=cfg.lr * cfg.min_lr_ratio,
        warmup_t=warmup,
        warmup_lr_init=cfg.lr * 0.01 if warmup else 0,
        warmup_prefix=True,
        t_in_epochs=False,
    )
