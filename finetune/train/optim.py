"""Parameter groups, optimizer and the per-step LR schedule.

Groups are built per stage (``stages.model_stages``), two per stage at most: weights with weight
decay, and 1-D parameters (biases, norm weights) plus a timm model's ``no_weight_decay()`` names
(pos_embed, cls_token) without it - nanoGPT's ``p.dim() >= 2`` rule. Each group carries
``lr_scale``: ``layer_decay ** (n - 1 - i)`` for stage i of n (BEiT/timm layer-wise decay, here
for any architecture, not only those with a timm ``group_matcher``), times ``head_lr_scale`` for
the head. Only trainable parameters reach the optimizer; stages thawed later are added with
``LRSchedule.add_param_groups``. The schedule (timm ``CosineLRScheduler`` or ``StepLRScheduler``)
is linear warmup then decay, stepped once per optimizer step, and applies each group's
``lr_scale``: the optimizer holds the base LR, the scheduler alone writes the LR each step.

Example:
    >>> groups = build_param_groups(model, OptimConfig(layer_decay=0.75), report.stages)  # doctest: +SKIP
    >>> opt = build_optimizer(groups, OptimConfig())  # doctest: +SKIP
    >>> sched = LRSchedule(opt, OptimConfig(), steps_per_epoch=50, epochs=5)  # doctest: +SKIP
    >>> sched.step_update(1)  # after each optimizer step  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..autoconfig import auto_lr, warmup_for
from ..config import OptimConfig
from ..models.stages import Stage, model_stages

__all__ = [
    "build_param_groups",
    "build_optimizer",
    "LRSchedule",
    "RangeSchedule",
    "stage_lr_scales",
]


def build_param_groups(
    model: nn.Module,
    cfg: OptimConfig,
    stages: Optional[Sequence[Stage]] = None,
    *,
    only: Optional[set[str]] = None,
) -> list[dict]:
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
                groups.append(
                    dict(params=params, weight_decay=wd, lr_scale=scale, stage=stage.name)
                )
    if not groups and only is None:
        raise ValueError("no trainable parameters: the freezing policy froze everything")
    return groups


def stage_lr_scales(stages: Sequence[Stage], cfg: OptimConfig) -> dict[str, float]:
    """``lr_scale`` of each stage: layer decay from the head down, head times head_lr_scale."""
    n = len(stages)
    scales = {
        s.name: (cfg.layer_decay ** (n - 1 - i) if cfg.layer_decay else 1.0)
        for i, s in enumerate(stages)
    }
    scales[stages[-1].name] *= cfg.head_lr_scale
    return scales


def peak_lr(cfg: OptimConfig) -> float:
    """``cfg.lr``; a run resolves an "auto" one by architecture first (``plan_run``), a bare
    ``OptimConfig`` gets the CNN value."""
    return cfg.lr if cfg.lr is not None else auto_lr(cfg.optimizer, cnn=True)


def build_optimizer(groups: list[dict] | nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW or SGD (nesterov when momentum > 0) over ``groups`` (or a model's trainable
    parameters). Every group starts at the base LR ``cfg.lr``: the schedule scales it."""
    if isinstance(groups, nn.Module):
        groups = build_param_groups(groups, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=peak_lr(cfg), momentum=cfg.momentum,
                               nesterov=cfg.momentum > 0)  # fmt: skip
    return torch.optim.AdamW(groups, lr=peak_lr(cfg))


class LRSchedule:
    """The per-step LR schedule of a run: a timm scheduler in optimizer steps (cosine, step or
    exponential after linear warmup) that applies each group's ``lr_scale``.

    ``add_param_groups`` gives stages thawed mid-run to the optimizer; the timm scheduler is
    rebuilt over all groups through its constructor (its only state is derived from the groups
    and the config), so no scheduler internals are edited.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        cfg: OptimConfig,
        *,
        steps_per_epoch: int,
        epochs: int,
    ):
        self.optimizer, self.cfg = optimizer, cfg
        self.steps_per_epoch = steps_per_epoch
        self._plan(max(1, steps_per_epoch * epochs))

    def _plan(self, total: int) -> None:
        self.total = total
        epochs = total / self.steps_per_epoch
        warmup = self.cfg.warmup_epochs
        warmup = warmup_for(epochs) if warmup is None else warmup
        self.warmup = min(int(round(warmup * self.steps_per_epoch)), self.total - 1)
        self.scheduler = self._build()

    def replan(self, total_steps: int, *, step: int, warmup: Optional[int] = None) -> None:
        """End the schedule at ``total_steps`` instead (``--budget`` re-plans as it measures).
        A finished warmup keeps its length; one still under way is re-planned (5 % of the new
        length when "auto"); ``warmup`` (steps) restores a saved plan exactly."""
        done = self.warmup
        self._plan(max(1, total_steps))
        keep = warmup if warmup is not None else done if step >= done else None
        if keep is not None:
            self.warmup = min(keep, self.total - 1)
            self.scheduler = self._build()
        self.step_update(step)

    def _build(self):
        from timm.scheduler import CosineLRScheduler, StepLRScheduler

        cfg, warmup = self.cfg, self.warmup
        common = dict(
            warmup_t=warmup,
            warmup_lr_init=peak_lr(cfg) * 0.01 if warmup else 0,
            warmup_prefix=True,
            t_in_epochs=False,
        )
        if cfg.schedule != "cosine":
            every = self.steps_per_epoch * (cfg.step_epochs if cfg.schedule == "step" else 1)
            return StepLRScheduler(
                self.optimizer,
                decay_t=max(1, int(round(every))),
                decay_rate=cfg.decay_rate,
                **common,
            )
        return CosineLRScheduler(
            self.optimizer,
            # timm warns that a 1-step cosine has no effect; the steps run are the same
            t_initial=max(2, self.total - warmup),
            lr_min=peak_lr(cfg) * cfg.min_lr_ratio,
            **common,
        )

    def step_update(self, step: int) -> None:
        """Set every group's LR for optimizer step ``step`` (call after each step)."""
        self.scheduler.step_update(step)

    def add_param_groups(self, groups: list[dict], *, step: int) -> None:
        """Add thawed parameters at optimizer step ``step``; they follow the same schedule."""
        for g in groups:
            g["lr"] = g["initial_lr"] = peak_lr(self.cfg)
            self.optimizer.add_param_group(g)
        self.scheduler = self._build()
        self.step_update(step)

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved schedule; one saved for another run length (``--resume RUN --epochs
        N``) is re-planned over this one's length instead (the LR jumps to where the longer
        schedule is at this step)."""
        if "t_initial" in state and state["t_initial"] != getattr(
            self.scheduler, "t_initial", None
        ):
            return  # built for this length already; the step comes from the trainer
        self.scheduler.load_state_dict(state)


class RangeSchedule:
    """The LR range test's schedule: ``start_lr * gamma ** step`` times each group's
    ``lr_scale`` (an exponential sweep; see ``finetune.tools.lrfind``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, start_lr: float, gamma: float):
        self.optimizer, self.start_lr, self.gamma = optimizer, start_lr, gamma
        self.step_update(0)

    def lr(self, step: int) -> float:
        return self.start_lr * self.gamma**step

    def step_update(self, step: int) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr(step) * g.get("lr_scale", 1.0)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
