"""Freezing policy: which parameters train, which BatchNorm layers keep their statistics.

``--freeze-until NAME``: NAME is the first module that trains. Every parameter of a module that
runs before NAME in the forward pass is frozen (``requires_grad=False``); parameters held directly
by an ancestor of NAME (a ViT's ``cls_token``/``pos_embed``) count as part of the stem. The
classifier always trains. BatchNorm layers whose parameters are all frozen are held in eval mode so
their running statistics stay exactly as pretrained (``bn="frozen"``, the default); ``bn="train"``
lets them update.

Forward order is observed, not guessed: one forward pass of a 1-image dummy batch with
pre-hooks records the order in which modules first run.

Example:
    >>> report = apply_policy(model, PolicyConfig(freeze_until="layer3"), info)  # doctest: +SKIP
    >>> set_train_mode(model, report)  # model.train(), frozen BN layers back to eval  # doctest: +SKIP
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .backbones import BackboneInfo
from .config import PolicyConfig

__all__ = ["PolicyReport", "StageRow", "apply_policy", "set_train_mode", "forward_order",
           "stage_names"]


@dataclass(frozen=True)
class StageRow:
    name: str
    trainable: int  # parameter count (elements)
    frozen: int


@dataclass(frozen=True)
class PolicyReport:
    freeze_until: Optional[str]
    bn_mode: str
    stages: tuple[StageRow, ...]
    frozen_bn: tuple[str, ...]  # BatchNorm modules held in eval mode while training

    @property
    def trainable(self) -> int:
        return sum(r.trainable for r in self.stages)

    @property
    def total(self) -> int:
        return sum(r.trainable + r.frozen for r in self.stages)

    def summary(self) -> str:
        pct = 100.0 * self.trainable / max(self.total, 1)
        return (f"trainable params: {self.trainable:,} || all params: {self.total:,} || "
                f"trainable%: {pct:.2f} || frozen BatchNorm layers (eval mode): {len(self.frozen_bn)}")

    def table(self):
        from rich.table import Table

        table = Table(title=f"Freezing plan (freeze_until={self.freeze_until}, bn={self.bn_mode})")
        for col in ("stage", "trainable", "frozen", "state"):
            table.add_column(col, justify="left" if col in ("stage", "state") else "right")
        for r in self.stages:
            state = "train" if not r.frozen else ("frozen" if not r.trainable else "partial")
            table.add_row(r.name, f"{r.trainable:,}", f"{r.frozen:,}", state)
        table.caption = self.summary()
        return table


def forward_order(model: nn.Module, input_size: tuple[int, ...]) -> dict[str, int]:
    """Module name -> index of its first call in one forward pass (root is ``''`` at 0)."""
    order: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        def hook(_m, _args, name=name):
            order.setdefault(name, len(order))
        hooks.append(module.register_forward_pre_hook(hook))
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return order


def stage_names(model: nn.Module, order: dict[str, int]) -> list[str]:
    """Top-level children that hold parameters, in forward order."""
    names = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
    return sorted(names, key=lambda n: order.get(n, len(order)))


def apply_policy(model: nn.Module, cfg: PolicyConfig, info: BackboneInfo) -> PolicyReport:
    """Set ``requires_grad`` and the BatchNorm plan from ``cfg``; return the printed report.

    Raises:
        ValueError: ``freeze_until`` names no module that runs in the forward pass; the message
            lists the valid top-level stage names.
    """
    order = forward_order(model, info.input_size)
    stages = stage_names(model, order)
    target = cfg.freeze_until
    frozen_names: set[str] = set()
    if target is not None:
        if target not in order:
            raise ValueError(_unknown_module(target, model, stages))
        frozen_names = _params_before(model, order, target)
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen_names or _in(name, info.classifier))
    frozen_bn = ()
    if cfg.bn == "frozen":
        limit = order[target] if target is not None else -1
        frozen_bn = tuple(n for n, m in model.named_modules() if isinstance(m, _BatchNorm)
                          and _is_frozen(m, order.get(n, limit), limit))
    return PolicyReport(target, cfg.bn, _stage_rows(model, stages), frozen_bn)


def _is_frozen(module: nn.Module, position: int, limit: int) -> bool:
    """A BatchNorm layer is frozen when all its parameters are; one without affine parameters
    when it runs before the first trained module."""
    params = list(module.parameters(recurse=False))
    return all(not p.requires_grad for p in params) if params else position < limit


def set_train_mode(model: nn.Module, report: PolicyReport) -> nn.Module:
    """``model.train()``, then frozen BatchNorm layers back to eval so their statistics stay."""
    model.train()
    for name in report.frozen_bn:
        model.get_submodule(name).eval()
    return model


def _params_before(model: nn.Module, order: dict[str, int], target: str) -> set[str]:
    limit = order[target]
    has_before = any(order.get(n, limit) < limit and any(True for _ in m.parameters(recurse=False))
                     for n, m in model.named_modules() if not _in(target, n))
    frozen = set()
    for module_name, module in model.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{pname}" if module_name else pname
            if _in(target, module_name) and module_name != target:
                # held by an ancestor of the target (ViT cls_token, pos_embed): part of the stem
                if has_before:
                    frozen.add(full)
            elif order.get(module_name, limit) < limit:
                frozen.add(full)
    return frozen


def _in(name: str, prefix: str) -> bool:
    """True when ``name`` is ``prefix`` or inside it (module paths; '' is the root)."""
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _stage_rows(model: nn.Module, stages: list[str]) -> tuple[StageRow, ...]:
    rows = []
    for stage in stages:
        params = list(model.get_submodule(stage).parameters())
        rows.append(StageRow(stage, sum(p.numel() for p in params if p.requires_grad),
                             sum(p.numel() for p in params if not p.requires_grad)))
    own = list(model.parameters(recurse=False))
    if own:  # parameters held by the root itself (cls_token, pos_embed)
        rows.insert(0, StageRow("(root: " + ", ".join(n for n, _ in model.named_parameters(
            recurse=False)) + ")", sum(p.numel() for p in own if p.requires_grad),
            sum(p.numel() for p in own if not p.requires_grad)))
    return tuple(rows)


def _unknown_module(name: str, model: nn.Module, stages: list[str]) -> str:
    all_names = [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(name, all_names, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return (f"--freeze-until: no module named '{name}' runs in this model's forward pass.{hint} "
            f"Valid stage names: {', '.join(stages)} (or a submodule such as "
            f"'{_example_sub(model, stages)}')")


def _example_sub(model: nn.Module, stages: list[str]) -> str:
    with_children = [s for s in stages if any(True for _ in model.get_submodule(s).children())]
    if not with_children:
        return stages[0] if stages else ""
    stage = with_children[len(with_children) // 2]
    return f"{stage}.{next(n for n, _ in model.get_submodule(stage).named_children())}"
