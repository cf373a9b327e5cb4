"""The freezing plan as plain data: per stage its modules, parameter counts, what trains, and the
peak LR and weight decay its parameters get. ``finetune inspect``, ``--dry-run`` and the start of
every run show this same plan (``finetune.render`` draws it as a table).

Example:
    >>> plan = build_plan(model, report, OptimConfig())  # doctest: +SKIP
    >>> [row.state for row in plan.rows]  # doctest: +SKIP
    ['frozen', 'frozen', 'train', 'train']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn

from ..config import OptimConfig
from .optim import peak_lr, stage_lr_scales
from .policy import PolicyReport

__all__ = ["Plan", "PlanRow", "build_plan"]


@dataclass(frozen=True)
class PlanRow:
    """One stage of the plan."""

    stage: str
    modules: tuple[str, ...]
    params: int  # elements
    trainable: int  # elements
    state: str  # "train", "frozen", "partial", plus ", thaws at epoch N"
    peak_lr: Optional[float]  # None without an optimizer config
    weight_decay: Optional[float]


@dataclass(frozen=True)
class Plan:
    """The freezing plan of a model, as rows."""

    title: str
    rows: tuple[PlanRow, ...]
    summary: str  # peft-style "trainable params: ... || all params: ..."
    with_optim: bool


def build_plan(model: nn.Module, report: PolicyReport, optim: Optional[OptimConfig] = None) -> Plan:
    """The plan of ``report`` on ``model``; with ``optim``, each stage's peak LR and decay."""
    named = dict(model.named_parameters())
    scales = stage_lr_scales(report.stages, optim) if optim is not None else {}
    thaw = dict(zip(report.thaw_order, report.thaw_epochs))
    rows = []
    for stage in report.stages:
        total = sum(named[p].numel() for p in stage.params)
        trainable = sum(named[p].numel() for p in stage.params if named[p].requires_grad)
        state = "train" if trainable == total else "frozen" if trainable == 0 else "partial"
        if stage.name in thaw and state != "train":
            state += f", thaws at epoch {thaw[stage.name]}"
        rows.append(
            PlanRow(
                stage.name,
                tuple(stage.modules),
                total,
                trainable,
                state,
                peak_lr(optim) * scales[stage.name] if optim is not None else None,
                optim.weight_decay if optim is not None else None,
            )
        )
    title = (
        f"Plan: {report.description}, BatchNorm {report.bn_mode} "
        f"({len(report.frozen_bn)} held in eval mode)"
    )
    return Plan(title, tuple(rows), report.summary(model), optim is not None)
