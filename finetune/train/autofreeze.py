"""The frozen start of a budgeted run: ``policy.freeze_stages`` left "auto" (None).

A budgeted run of a pretrained CNN, with no freezing choice of its own, freezes its leading
stages that together hold at most ``MAX_SHARE`` of the backbone's weights; every other run
freezes nothing. Why: a CNN's first stages run at the highest resolution, so their backward pass
costs far more than their share of the weights, and they hold generic edge and texture filters
that a fine-tune changes little. Under a budget their time buys epochs and image size instead.
Detectron2 freezes the same stages of a ResNet by default (``FREEZE_AT=2``: the stem and res2).

What the rule picks: tf_efficientnet_lite0 and efficientnet_b0 the stem and blocks 0-2 (1.6 %
of the weights; a training step on 2 CPU cores 1.46x faster at 96 px, 1.28x at 64 px); resnet18
and resnet50 the stem and layer1; convnext_tiny the stem and stages.0; a ViT nothing (not a
CNN). Measured with ``bench/transfer.py`` (docs/benchmarks.md).

Example:
    >>> share_stages([100, 100, 800, 9000], max_share=0.02)  # params per stage, head excluded
    1
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from torch import nn

from ..config import FinetuneConfig, PolicyConfig
from ..models.stages import Stage
from .runtime import is_cnn

__all__ = ["MAX_SHARE", "resolve_freeze", "share_stages"]

MAX_SHARE = 0.02  # of the weights before the head


def share_stages(counts: list[int], *, max_share: float = MAX_SHARE) -> int:
    """How many leading stages (``counts``: parameters per stage, head excluded) together hold
    at most ``max_share`` of the parameters."""
    total, held = sum(counts), 0
    for n, count in enumerate(counts):
        held += count
        if held > max_share * total:
            return n
    return len(counts)


def resolve_freeze(
    cfg: FinetuneConfig, model: nn.Module, stages: list[Stage], *, pretrained: bool
) -> tuple[PolicyConfig, Optional[str]]:
    """``cfg.policy`` with an "auto" ``freeze_stages`` given a value, and the reason when the
    rule froze something (see the module docstring). ``pretrained``: the weights came from a
    pretrained source (freezing random layers would keep them random)."""
    p = cfg.policy
    if p.freeze_stages is not None:
        return p, None
    chosen = any(
        (p.freeze_until, p.linear_probe, p.train_only, p.full, p.freeze, p.unfreeze_every,
         p.unfreeze_at, cfg.adapter.peft != "none")
    )  # fmt: skip
    rgb = cfg.data.in_chans in (None, 3)  # an adapted first conv must learn its new channels
    wanted = cfg.train.budget is not None and pretrained and rgb and not chosen
    if not wanted or not is_cnn(model):
        return replace(p, freeze_stages=0), None
    params = dict(model.named_parameters())
    body = stages[:-1]
    counts = [sum(params[name].numel() for name in s.params) for s in body]
    n = share_stages(counts)
    if n == 0:
        return replace(p, freeze_stages=0), None
    share = sum(counts[:n]) / sum(counts)
    names = ", ".join(s.name for s in body[:n])
    return replace(p, freeze_stages=n), (
        f"freeze {names} (--freeze-stages {n}, {share:.1%} of the weights): in a budgeted CNN "
        "run their backward pass at full resolution costs more than they learn; --full trains "
        "everything"
    )
