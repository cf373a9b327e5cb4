"""Parameter groups, optimizer and the per-step LR schedule.

Groups are built per stage (``stages.model_stages``), two per stage at most: weights with weight
decay, and 1-D parameters (biases, norm weights) plus a timm model's ``no_weight_decay()`` names
(pos_embed, cls_token) without it - nanoGPT's ``p.dim() >= 2`` rule. Each group carries
``lr_scale``: ``layer_decay ** (n - 1 - i)`` for stage i of n (BEiT/timm layer-wise decay, here
for any architecture, not only those with a timm ``group_matcher``), times ``head_lr_scale`` for
the head. Only trainable parameters reach the optimizer; stages thawed later are added with
``add_param_groups``. The schedule (timm ``CosineLRScheduler``) is linear warmup then cosine
decay, stepped once per optimizer step, and applies each group's ``lr_scale``.

Example:
    >>> groups = build_param_groups(model, OptimConfig(layer_decay=0.75), report.stages)  # doctest: +SKIP
    >>> opt = build_optimizer(groups, OptimConfig())  # doctest: +SKIP
    >>> sched = build_scheduler(opt, OptimConfig(), steps_per_epoch=50, epochs=5)  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .config import OptimConfig
from .stages import Stage, model_stages

__all__ = ["build_param_groups", "build_optimizer", "build_scheduler", "add_param_groups",
           "stage_lr_scales"]


def build_param_groups(model: nn.Module, cfg: OptimConfig,
                       stages: Optional[Sequence[Stage]] = None, *,
                       only: Optional[set[str]] = None) -> list[dict]:
    """Trainable parameters (restricted to ``only`` if given) in per-stage groups."""
    stages = list(stages) if stages is not None else model_stages(model)
    named = dict(model.named_parameters())
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    scales = stage_lr_scales(stages, cfg)
    groups = []
    for stage in stages:
        scale = scales[stage.name]
        decay, no_decay = [], []
        for name in stage.params:
            p = named[name]
            if not p.requires_grad or (only is not None and name not in only):
                continue
            (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
        for params, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)):
            if params:
                groups.append(dict(params=params, weight_decay=wd, lr_scale=scale,
                                   stage=stage.name))
    if not groups and only is None:
        raise ValueError("no trainable parameters: the freezing policy froze everything")
    return groups


def stage_lr_scales(stages: Sequence[Stage], cfg: OptimConfig) -> dict[str, float]:
    """``lr_scale`` of each stage: layer decay from the head down, head times head_lr_scale."""
    n = len(stages)
    scales = {s.name: (cfg.layer_decay ** (n - 1 - i) if cfg.layer_decay else 1.0)
              for i, s in enumerate(stages)}
    scales[stages[-1].name] *= cfg.head_lr_scale
    return scales


def build_optimizer(groups: list[dict] | nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW or SGD (nesterov when momentum > 0) over ``groups`` (or a model's trainable
    parameters)."""
    if isinstance(groups, nn.Module):
        groups = build_param_groups(groups, cfg)
    for g in groups:
        g["lr"] = cfg.lr * g["lr_scale"]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, *, steps_per_epoch: int,
                    epochs: int):
    """A timm scheduler in optimizer steps (cosine, step or exponential after linear warmup);
    call ``step_update(step)`` after each optimizer step."""
    from timm.scheduler import CosineLRScheduler, StepLRScheduler

    for g in optimizer.param_groups:  # timm schedules from the unscaled base LR
        g["lr"] = cfg.lr
    total = max(1, steps_per_epoch * epochs)
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    if cfg.schedule != "cosine":
        every = steps_per_epoch * (cfg.step_epochs if cfg.schedule == "step" else 1)
        return StepLRScheduler(optimizer, decay_t=max(1, int(round(every))),
                               decay_rate=cfg.decay_rate, warmup_t=warmup,
                               warmup_lr_init=cfg.lr * 0.01 if warmup else 0,
                               warmup_prefix=True, t_in_epochs=False)
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total - warmup),
        lr_min=cfg.lr * cfg.min_lr_ratio,
        warmup_t=warmup,
        warmup_lr_init=cfg.lr * 0.01 if warmup else 0,
        warmup_prefix=True,
        t_in_epochs=False,
    )


def add_param_groups(optimizer: torch.optim.Optimizer, scheduler, groups: list[dict], *,
                     base_lr: float, step: int) -> None:
    """Add thawed parameters mid-run; the scheduler learns their base LR and sets the current
    one (``lr_scale`` included) for ``step``."""
    for g in groups:
        g["lr"] = g["initial_lr"] = base_lr
        optimizer.add_param_group(g)
        scheduler.base_values.append(base_lr)
        # timm precomputes one warmup slope per group and zips groups with LR values: a group
        # without its slope would silently keep the LR it was added with during warmup
        scheduler.warmup_steps.append((base_lr - scheduler.warmup_lr_init) / scheduler.warmup_t
                                      if scheduler.warmup_t else 1)
    scheduler.step_update(step)
