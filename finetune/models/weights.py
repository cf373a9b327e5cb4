"""Weight files: read them without pickle, map foreign key names onto an architecture.

``load_weight_file`` reads .safetensors, or .pth/.pt/.bin with ``torch.load(weights_only=True)``
(a file that needs pickled code is refused). ``map_state_dict`` maps its keys onto a model: by
name after stripping wrapper prefixes (``module.``, ``model.``), else by order when every tensor
has the same shape and role (weight/bias/running stats) in the same order, as the lukemelas
EfficientNet naming onto timm's. Anything ambiguous or left over fails loudly.

Example:
    >>> source, report = load_file_into(model, "efficientnet-lite0.pth")  # doctest: +SKIP
    >>> report  # doctest: +SKIP
    'mapped 247 tensors by order and shape (_conv_stem.weight -> conv_stem.weight, ...)'
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..errors import first_line
from .info import classifier_name

__all__ = ["WEIGHT_SUFFIXES", "load_weight_file", "load_file_into", "map_state_dict"]

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def load_weight_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or a pickle-free torch file (``weights_only=True``).

    Example:
        >>> sd = load_weight_file("model.safetensors")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported weight file type '{path.suffix}'; "
            f"use one of {', '.join(WEIGHT_SUFFIXES)}"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt/truncated files raise many types; name the file either way
        raise ValueError(
            f"{path}: cannot read weights ({first_line(e)}); is the file complete?"
        ) from None
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    return sd


def load_file_into(model: nn.Module, path) -> tuple[str, Optional[str]]:
    """Load a weight file into ``model`` (keys mapped when needed); returns (source, mapping note)."""
    src = load_weight_file(path)
    mapped, report = map_state_dict(src, model, source=str(path))
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    classifier = set(_classifier_keys(model))
    left = [k for k in missing if k not in classifier and not k.endswith("num_batches_tracked")]
    if left or unexpected:  # map_state_dict guarantees neither; keep the invariant explicit
        raise ValueError(f"{path}: weights left unmatched: {(left + list(unexpected))[:5]}")
    return f"file {path}", report


def _classifier_keys(model: nn.Module) -> list[str]:
    name = classifier_name(model)
    return [k for k in model.state_dict() if k.startswith(name + ".")]


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DataParallel / Lightning / EMA wrappers prefix every key; strip while all keys share it
    changed = True
    while changed and sd:
        changed = False
        for prefix in ("module.", "model.", "_orig_mod."):
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                changed = True
    return sd


def map_state_dict(
    src: dict[str, torch.Tensor], model: nn.Module, *, source: str = "weights"
) -> tuple[dict[str, torch.Tensor], Optional[str]]:
    """Map a foreign state dict onto ``model``'s key names, excluding the classifier.

    Keys are matched by name (after stripping ``module.``/``model.`` prefixes) or, when the names
    differ, by order when every tensor has the same shape in the same order (e.g. the lukemelas
    EfficientNet naming onto timm's). Anything ambiguous or left over raises ``ValueError``.

    Returns:
        The mapped state dict and a one-line report of the mapping (None when names matched).

    Example:
        >>> mapped, report = map_state_dict(torch.load(f, weights_only=True), model)  # doctest: +SKIP
    """
    src = {k: v for k, v in _strip_prefixes(src).items() if not k.endswith("num_batches_tracked")}
    target = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    classifier = [k for k in _classifier_keys(model) if k in target]
    body = [k for k in target if k not in classifier]
    if set(body) <= set(src):
        extra = [k for k in src if k not in target and k not in classifier]
        bad = [k for k in body if _adapt_channels(src[k], target[k]).shape != target[k].shape]
        if extra or bad:
            raise ValueError(
                f"{source}: {len(extra)} keys not in the model (e.g. {extra[:3]}) and "
                f"{len(bad)} shape mismatches (e.g. {bad[:3]}); is it the right "
                "architecture?"
            )
        pairs = [(k, k) for k in body + classifier if k in src]
        report = None
    else:
        pairs = _pairs_by_order(list(src), body, classifier, source)
        report = (
            f"mapped {len(pairs)} tensors by order and shape ({pairs[0][0]} -> {pairs[0][1]}, "
            f"..., {pairs[-1][0]} -> {pairs[-1][1]})"
        )
        for i, (s, t) in enumerate(pairs):
            if _adapt_channels(src[s], target[t]).shape != target[t].shape and t not in classifier:
                raise ValueError(
                    f"{source}: tensor #{i} '{s}' {tuple(src[s].shape)} does not fit "
                    f"'{t}' {tuple(target[t].shape)}; the file is for another "
                    "architecture"
                )
            if _kind(s) and _kind(t) and _kind(s) != _kind(t):
                raise ValueError(
                    f"{source}: tensor #{i} '{s}' would load into '{t}' (a "
                    f"{_kind(s)} into a {_kind(t)}); the order differs, so the "
                    "file cannot be mapped by order"
                )
    # the file's classifier is kept when it fits (ImageNet head on an ImageNet model) and dropped
    # otherwise: replace_head re-creates it for the user's classes either way
    mapped = {t: _adapt_channels(src[s], target[t]) for s, t in pairs}
    mapped = {t: v for t, v in mapped.items() if v.shape == target[t].shape}
    return mapped, report


def _adapt_channels(weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """An RGB first-conv weight for a model with another input channel count (timm's
    ``adapt_input_conv``); anything else unchanged."""
    if (
        weight.ndim == 4
        and target.ndim == 4
        and weight.shape[1] == 3
        and weight.shape[1] != target.shape[1]
        and weight.shape[0] == target.shape[0]
        and weight.shape[2:] == target.shape[2:]
    ):
        from timm.models import adapt_input_conv

        return adapt_input_conv(target.shape[1], weight)
    return weight


def _pairs_by_order(
    src_keys: list[str], body: list[str], classifier: list[str], source: str
) -> list[tuple[str, str]]:
    if len(src_keys) == len(body) + len(classifier):
        return list(zip(src_keys, body + classifier))
    if len(src_keys) == len(body):
        return list(zip(src_keys, body))
    raise ValueError(
        f"{source}: {len(src_keys)} tensors in the file vs {len(body)} in the model (plus "
        f"{len(classifier)} classifier tensors) and the key names differ, so they "
        "cannot be mapped; is it the right architecture?"
    )


def _kind(key: str) -> str:
    """The role a tensor's last name part states; '' when it states none (cls_token...)."""
    leaf = key.rsplit(".", 1)[-1]
    return leaf if leaf in ("weight", "bias", "running_mean", "running_var") else ""
