"""Freezing policy: which parameters train, which BatchNorm layers keep their statistics, and
when frozen stages thaw.

What to freeze (one selector, plus an optional ``freeze`` regex; the head always trains):

- ``freeze_until NAME``: NAME is the first module that trains. Every parameter of a module that
  runs before NAME in the forward pass is frozen; parameters held directly by an ancestor of
  NAME (a ViT's ``cls_token``/``pos_embed``) count as stem. Forward order is observed with
  pre-hooks on one forward pass of a 1-image dummy batch, not guessed from registration order.
- ``freeze_stages N``: the first N stages (``stages.model_stages``) are frozen.
- ``linear_probe``: everything but the head is frozen.
- ``train_only REGEX``: only matching parameters (and the head) train.
- ``full``: nothing is frozen.

BatchNorm: ``frozen`` holds frozen layers' BatchNorm in eval mode so their running statistics stay
bit-identical; ``eval-all`` holds every BatchNorm layer in eval mode (small batches); ``train``
lets all of them update. Gradual unfreezing (``unfreeze_every`` / ``unfreeze_at``) thaws the
frozen stages one at a time from the top; which stages are thawed is a function of the epoch
alone, so a resumed run continues the same schedule.

Example:
    >>> report = apply_policy(model, PolicyConfig(freeze_until="layer3"), info)  # doctest: +SKIP
    >>> set_train_mode(model, report)  # model.train(), frozen BN layers back to eval  # doctest: +SKIP
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Optional

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..config import PolicyConfig
from ..errors import did_you_mean
from ..models.info import BackboneInfo
from ..models.stages import Stage, model_stages

__all__ = [
    "PolicyReport",
    "apply_policy",
    "set_train_mode",
    "forward_order",
    "thaw_for_epoch",
    "refresh_report",
]


@dataclass(frozen=True)
class PolicyReport:
    """What ``apply_policy`` did: the stages, what is frozen, BatchNorm held in eval mode, the thaw plan."""

    description: str  # "freeze_until=layer3", "linear_probe", ...
    bn_mode: str
    stages: tuple[Stage, ...]
    frozen_bn: tuple[str, ...]  # BatchNorm modules held in eval mode while training
    thaw_order: tuple[str, ...] = ()  # stages that gradual unfreezing thaws, first to last
    thaw_epochs: tuple[int, ...] = ()  # 1-based epochs at whose start one more stage thaws
    order: dict = field(default_factory=dict, compare=False, repr=False)

    def counts(self, model: nn.Module) -> tuple[int, int]:
        """(trainable, total) parameter counts (elements)."""
        params = list(model.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def summary(self, model: nn.Module) -> str:
        """One line in the style of peft's ``print_trainable_parameters``."""
        trainable, total = self.counts(model)
        return (
            f"trainable params: {trainable:,} || all params: {total:,} || "
            f"trainable%: {100.0 * trainable / max(total, 1):.4f}"
        )


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


def apply_policy(
    model: nn.Module, cfg: PolicyConfig, info: BackboneInfo, *, epochs: Optional[int] = None
) -> PolicyReport:
    """Set ``requires_grad`` and the BatchNorm plan from ``cfg``; return the report.

    Args:
        epochs: run length, to resolve ``unfreeze_every`` into epochs and check
            ``unfreeze_at``; None when not known in advance (a ``--budget`` run plans it).

    Raises:
        ValueError: a module name, stage count or regex that matches nothing; the message lists
            the valid choices.
    """
    order = forward_order(model, info.input_size)
    stages = tuple(model_stages(model, order))
    head = set(stages[-1].params)
    names = [n for n, _ in model.named_parameters()]
    frozen, description = _select_frozen(model, cfg, stages, order, names)
    if cfg.freeze is not None:
        matched = _regex_params(cfg.freeze, names, "--freeze") - head
        if not matched:
            raise ValueError(
                f"--freeze '{cfg.freeze}' matches only head parameters, and the "
                "head always trains; use --linear-probe style options instead"
            )
        frozen |= matched
        description += f", freeze=/{cfg.freeze}/"
    frozen -= head
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    thaw_order = tuple(s.name for s in reversed(stages[:-1]) if set(s.params) & frozen)
    report = PolicyReport(
        description,
        cfg.bn,
        stages,
        (),
        thaw_order,
        _thaw_epochs(cfg, epochs, len(thaw_order)),
        order,
    )
    return refresh_report(model, report)


def describe_policy(cfg: PolicyConfig) -> str:
    """A short name for the policy a config selects (``freeze_until=layer3``, ``full``)."""
    for key in ("freeze_until", "train_only"):
        if getattr(cfg, key) is not None:
            return f"{key}={getattr(cfg, key)}"
    if cfg.freeze_stages:
        return f"freeze_stages={cfg.freeze_stages}"
    return "linear_probe" if cfg.linear_probe else "full"


def _select_frozen(model, cfg: PolicyConfig, stages, order, names) -> tuple[set[str], str]:
    description = describe_policy(cfg)
    if cfg.freeze_until is not None:
        if cfg.freeze_until not in order:
            raise ValueError(_unknown_module(cfg.freeze_until, model, stages))
        return _params_before(model, order, cfg.freeze_until), description
    if cfg.freeze_stages:
        body = stages[:-1]
        if cfg.freeze_stages > len(body):
            raise ValueError(
                f"--freeze-stages {cfg.freeze_stages}: the model has {len(body)} "
                f"stages before the head ({', '.join(s.name for s in body)}); "
                f"use 1-{len(body)}, or --linear-probe"
            )
        return {p for s in body[: cfg.freeze_stages] for p in s.params}, description
    if cfg.linear_probe:
        return {p for s in stages[:-1] for p in s.params}, description
    if cfg.train_only is not None:
        return set(names) - _regex_params(cfg.train_only, names, "--train-only"), description
    return set(), description


def _regex_params(pattern: str, names: list[str], option: str) -> set[str]:
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"{option} '{pattern}': not a valid regular expression ({e})") from None
    matched = {n for n in names if rx.search(n)}
    if not matched:
        examples = ", ".join(names[:: max(1, len(names) // 6)][:6])
        raise ValueError(
            f"{option} '{pattern}' matches no parameter name (names look like: {examples})"
        )
    return matched


def _thaw_epochs(cfg: PolicyConfig, epochs: Optional[int], n_frozen: int) -> tuple[int, ...]:
    if cfg.unfreeze_at:
        late = [e for e in cfg.unfreeze_at if epochs and e > epochs]
        if late:
            raise ValueError(
                f"--unfreeze-at {','.join(map(str, cfg.unfreeze_at))}: epoch "
                f"{late[0]} is after the last epoch ({epochs})"
            )
        if len(cfg.unfreeze_at) > n_frozen:
            raise ValueError(
                f"--unfreeze-at lists {len(cfg.unfreeze_at)} epochs but only "
                f"{n_frozen} stages are frozen; list at most {n_frozen}"
            )
        return tuple(sorted(cfg.unfreeze_at))
    if cfg.unfreeze_every:
        every = cfg.unfreeze_every
        # no known length (--budget plans it as it runs): every frozen stage gets its epoch
        last = epochs or every * n_frozen + 1
        return tuple(range(every + 1, last + 1, every))[:n_frozen]
    return ()


def thaw_for_epoch(
    model: nn.Module, report: PolicyReport, epoch: int
) -> list[tuple[str, list[str]]]:
    """Thaw the stages scheduled to be trainable at the start of 1-based ``epoch``.

    Returns ``(stage, parameter names)`` for each stage that thawed now, in thaw order (empty if
    none). The thawed set depends on ``epoch`` alone, so a resumed run restores the schedule.
    """
    due = sum(1 for e in report.thaw_epochs if e <= epoch)
    stages = {s.name: s for s in report.stages}
    named = dict(model.named_parameters())
    thawed = []
    for stage_name in report.thaw_order[:due]:
        newly = [p for p in stages[stage_name].params if not named[p].requires_grad]
        for p in newly:
            named[p].requires_grad_(True)
        if newly:
            thawed.append((stage_name, newly))
    return thawed


def refresh_report(model: nn.Module, report: PolicyReport) -> PolicyReport:
    """The report with its frozen BatchNorm list recomputed from the current ``requires_grad``."""
    if report.bn_mode == "train":
        return replace(report, frozen_bn=())
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, _BatchNorm)]
    if report.bn_mode == "eval-all":
        return replace(report, frozen_bn=tuple(n for n, _ in bns))
    # a BatchNorm without affine parameters is frozen when it runs before the first module
    # that trains
    owners = [
        report.order.get(n)
        for n, m in model.named_modules()
        if any(p.requires_grad for p in m.parameters(recurse=False))
    ]
    first_trained = min((o for o in owners if o is not None), default=-1)
    frozen = []
    for name, module in bns:
        params = list(module.parameters(recurse=False))
        if params and all(not p.requires_grad for p in params):
            frozen.append(name)
        elif not params and report.order.get(name, first_trained) < first_trained:
            frozen.append(name)
    return replace(report, frozen_bn=tuple(frozen))


def set_train_mode(model: nn.Module, report: PolicyReport) -> nn.Module:
    """``model.train()``, then frozen BatchNorm layers back to eval so their statistics stay."""
    model.train()
    for name in report.frozen_bn:
        model.get_submodule(name).eval()
    return model


def _params_before(model: nn.Module, order: dict[str, int], target: str) -> set[str]:
    limit = order[target]
    has_before = any(
        order.get(n, limit) < limit and any(True for _ in m.parameters(recurse=False))
        for n, m in model.named_modules()
        if not _in(target, n)
    )
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


def _unknown_module(name: str, model: nn.Module, stages) -> str:
    all_names = [n for n, _ in model.named_modules() if n]
    hint = did_you_mean(name, all_names)
    top = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
    numbered = next((m for s in stages for m in s.modules if "." in m), None)
    example = f" such as '{numbered}'" if numbered else ""
    return (
        f"--freeze-until: no module named '{name}' runs in this model's forward pass.{hint} "
        f"Valid stage names: {', '.join(top)} (or any submodule{example}; "
        "'finetune inspect --backbone NAME' lists them)"
    )
