"""Stages: the ordered parameter groups (stem, stage 1..N, head) that policies act on.

timm models describe their own stages through ``group_matcher(coarse=True)`` (timm's layer-wise
LR decay uses the same grouping), so ``--freeze-stages``, ``--layer-decay`` and gradual
unfreezing work for every timm architecture. Other modules (torchvision) fall back to their
top-level children in forward order; a leading run of small modules becomes the ``stem`` and a
model with a single large container (VGG's ``features``) is split into that container's children.

Example:
    >>> [s.name for s in model_stages(timm.create_model("resnet18"))]  # doctest: +SKIP
    ['stem', 'layer1', 'layer2', 'layer3', 'layer4', 'head']
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .info import classifier_name

__all__ = ["Stage", "model_stages"]


@dataclass(frozen=True)
class Stage:
    """A group of parameters that freezes, thaws and gets an LR scale together."""

    name: str  # "stem", "layer1", "blocks.3", "head"
    params: tuple[str, ...]  # parameter names, in model order
    modules: tuple[str, ...]  # the modules it covers, for display and --freeze-until hints


def model_stages(model: nn.Module, order: dict[str, int] | None = None) -> list[Stage]:
    """Ordered stages of ``model``; the classifier is always in the last one, named ``head``.

    Args:
        order: module forward order (``policy.forward_order``), used by the fallback only.
    """
    head = classifier_name(model)
    groups = _timm_groups(model) if hasattr(model, "group_matcher") else None
    if groups is None:
        groups = _child_groups(model, order or {})
    # the classifier forms the last stage, so "freeze N stages" can never freeze it
    head_params = {n for n, _ in model.named_parameters() if _under(n, head)}
    groups = [[p for p in g if p not in head_params] for g in groups]
    groups = [g for g in groups if g]
    stages = [_stage(params, i, model) for i, params in enumerate(groups)]
    ordered = tuple(n for n, _ in model.named_parameters() if n in head_params)
    return stages + [Stage("head", ordered, (head,))]


def _timm_groups(model: nn.Module) -> list[list[str]] | None:
    from timm.models import group_parameters

    try:
        grouping = group_parameters(model, model.group_matcher(coarse=True))
    except (NotImplementedError, AttributeError, TypeError):
        return None
    return [list(grouping[k]) for k in sorted(grouping)]


def _child_groups(model: nn.Module, order: dict[str, int]) -> list[list[str]]:
    total = sum(p.numel() for p in model.parameters())
    children = _param_children(model, "", order)
    split_all = len(children) <= 2  # VGG/AlexNet: features + classifier; split both
    expanded = []
    for name, module in children:
        expanded += _expand(name, module, total, order, force=split_all)
    groups: list[list[str]] = []
    stem: list[str] = [n for n, _ in model.named_parameters(recurse=False)]
    for name, module, params in expanded:
        if (
            "." not in name
            and not groups
            and module is not None
            and not any(True for _ in module.children())
        ):
            stem += params  # leading single layers (conv1, bn1) form the stem
        else:
            groups.append(params)
    return [stem] + groups if stem else groups


def _param_children(module: nn.Module, prefix: str, order: dict[str, int]):
    children = [
        (f"{prefix}{n}", m) for n, m in module.named_children() if any(True for _ in m.parameters())
    ]
    return sorted(children, key=lambda c: order.get(c[0], len(order)))


def _expand(name: str, module: nn.Module, total: int, order: dict[str, int], force: bool):
    """``[(name, module, parameter names)]``. A container holding nearly all of the model
    (> 80 %, torchvision ViT's ``encoder``) is split into its children, recursively, so that it
    does not form one giant stage; parameters it holds itself (``encoder.pos_embedding``) form
    their own entry in front."""
    children = _param_children(module, name + ".", order)
    big = sum(p.numel() for p in module.parameters()) > 0.8 * total
    if len(children) >= 2 and (big or force):
        own = [f"{name}.{p}" for p, _ in module.named_parameters(recurse=False)]
        head = [(name, None, own)] if own else []
        return head + [e for n, m in children for e in _expand(n, m, total, order, force=False)]
    return [(name, module, [f"{name}.{p}" for p, _ in module.named_parameters()])]


def _stage(params: list[str], index: int, model: nn.Module) -> Stage:
    modules = _modules(params)
    owner = _owner(model, params)
    if owner:
        name, modules = owner, (owner,)
    elif index == 0:
        name = "stem"
    elif len(modules) <= 3:
        name = "+".join(modules)  # a last block with the final norm: "blocks.11+norm"
    else:
        name = f"stage{index}"
    return Stage(name, tuple(params), modules)


def _owner(model: nn.Module, params: list[str]) -> str:
    """The outermost module whose parameters are exactly ``params`` (``layer1``, also when it
    has a single block); '' when no module holds exactly them."""
    wanted = set(params)
    if len(wanted) == 1 and "." not in params[0]:
        return params[0]  # a root parameter such as cls_token

    def exact(name: str) -> bool:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            return False
        return {f"{name}.{n}" for n, _ in module.named_parameters()} == wanted

    name = _common_prefix(tuple(p.rsplit(".", 1)[0] for p in params))
    if not name or not exact(name):
        return ""
    while "." in name and exact(name.rsplit(".", 1)[0]):
        name = name.rsplit(".", 1)[0]
    return name


def _modules(params) -> tuple[str, ...]:
    """Distinct top-level owners (``layer1``, ``blocks.3`` for numbered containers)."""
    out: list[str] = []
    for p in params:
        parts = p.split(".")
        name = ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]
        if len(parts) == 1:
            name = parts[0]
        if name not in out:
            out.append(name)
    return tuple(out)


def _common_prefix(modules: tuple[str, ...]) -> str:
    split = [m.split(".") for m in modules]
    prefix = []
    for parts in zip(*split):
        if len(set(parts)) != 1:
            break
        prefix.append(parts[0])
    return ".".join(prefix)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")
