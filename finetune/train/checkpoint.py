"""Run directories: weights in safetensors, config.json in timm's layout, metrics.jsonl.

Every file is written through ``finetune._io.atomic_path`` (temporary name, fsync, rename), so a
crash mid-save never leaves a half-written ``model.safetensors`` and never loses the previous one.
``config.json`` is what ``timm.create_model("local-dir:RUN_DIR", pretrained=True)`` reads, plus a
``finetune`` section (resolved config, classes, weight source, metrics) that timm ignores.

Example:
    >>> model, run = load_run("runs/tf_efficientnet_lite0-20261128-101500")  # doctest: +SKIP
    >>> run["label_names"]  # doctest: +SKIP
    ['defective', 'functional']
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from torch import nn

from .._io import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    atomic_path,
    read_run_config,
)
from ..errors import first_line

__all__ = [
    "save_weights",
    "save_run_config",
    "check_weights_file",
    "check_run_config",
    "load_run",
]

FORMAT_VERSION = 1


def save_weights(
    run_dir: str | os.PathLike,
    model: nn.Module,
    metadata: dict[str, str] | None = None,
    *,
    name: str = WEIGHTS_NAME,
) -> Path:
    """Atomically write ``model.safetensors`` (or ``name``) under the model's own key names."""
    from safetensors.torch import save_model

    target = Path(run_dir) / name
    with atomic_path(target) as tmp:
        # force_contiguous: channels_last conv weights are not contiguous
        save_model(model, tmp, metadata={"format": "pt", **(metadata or {})}, force_contiguous=True)
    return target


def save_run_config(
    run_dir: str | os.PathLike,
    model: nn.Module,
    *,
    info,
    classes,
    data_config,
    extra: dict[str, Any],
) -> Path:
    """Atomically write ``config.json``: timm's export layout for timm models, plus ``finetune``."""
    target = Path(run_dir) / CONFIG_NAME
    model_config = {
        "label_names": list(classes),
        "finetune": {"format_version": FORMAT_VERSION, **extra},
    }
    with atomic_path(target) as tmp:
        if info.library == "timm":
            from timm.models._hub import save_config_for_hf

            save_config_for_hf(model, tmp, model_config=model_config, data_config=data_config)
        else:
            config = {
                "architecture": info.architecture,
                "num_classes": len(classes),
                "num_features": info.num_features,
                "pretrained_cfg": data_config,
                **model_config,
            }
            Path(tmp).write_text(json.dumps(config, indent=2))
    return target


def check_weights_file(path: str | os.PathLike) -> None:
    """Fail with a clear message if a safetensors file is missing or truncated."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; the run has no saved weights yet")
    try:
        with safe_open(str(path), framework="pt") as f:  # validates header and data size
            f.keys()
    except Exception as e:  # safetensors raises SafetensorError for truncated headers
        raise ValueError(
            f"{path}: cannot read weights ({e}); the file is truncated or not "
            "safetensors - restore it or re-run training"
        ) from None


def load_run(
    run_dir: str | os.PathLike, *, device: str = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a fine-tuned model from a run directory (safetensors only, no pickle).

    timm runs load through ``timm.create_model("local-dir:RUN_DIR", pretrained=True)``, the same
    path any timm user takes; torchvision runs rebuild the architecture and load the weights.
    """
    import timm
    from safetensors.torch import load_model

    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    check_run_config(config, run_dir / CONFIG_NAME)
    weights = run_dir / WEIGHTS_NAME
    check_weights_file(weights)
    try:
        arch = config["architecture"]
        if arch.startswith("module:"):
            raise ValueError(
                f"{run_dir} was trained from an nn.Module built in Python ({arch}); "
                "build the same module, replace its classifier for "
                f"{config['num_classes']} classes and load {weights} with "
                "safetensors.torch.load_model"
            )
        if arch.startswith("tv:"):
            from ..models.backbones import load_backbone
            from ..models.heads import replace_head

            drop = config.get("finetune", {}).get("config", {}).get("head", {}).get("head_dropout")
            model, info = load_backbone(arch, pretrained=False, drop_rate=drop or 0.0)
            replace_head(model, config["num_classes"], info)
            load_model(model, str(weights), strict=True, device=device)
        else:
            model = timm.create_model(f"local-dir:{run_dir}", pretrained=True)
    except TypeError as e:  # model_args the architecture does not take
        raise ValueError(
            f"{run_dir / CONFIG_NAME}: model_args do not fit {config['architecture']} "
            f"({first_line(e)}); the run directory is damaged"
        ) from None
    except (RuntimeError, KeyError) as e:  # load_state_dict mismatches
        raise ValueError(
            f"{weights}: weights do not fit {config.get('architecture')} "
            f"({str(e).splitlines()[0][:200]}); the run directory is damaged"
        ) from None
    return model.to(device).eval(), config


# create_model keywords that would load other files or change what "pretrained" means: a run
# directory's config.json never needs them (a damaged or planted one must not smuggle them in)
FORBIDDEN_MODEL_ARGS = (
    "checkpoint_path",
    "pretrained",
    "pretrained_cfg",
    "pretrained_cfg_overlay",
    "cache_dir",
    "pretrained_strict",
    "features_only",
)


def check_run_config(config: Any, path: Path) -> None:
    """Fail with one line naming the key when ``config.json`` cannot describe a model:
    not an object, no architecture or class count, a preprocessing without sizes or statistics,
    label names that do not match the class count, or model_args that load other files."""

    def bad(key: str, why: str) -> ValueError:
        return ValueError(
            f"{path}: {key} {why}; the run directory is damaged (restore "
            "config.json or re-run training)"
        )

    if not isinstance(config, dict):
        raise bad("the file", f"is a JSON {type(config).__name__}, not an object")
    if not isinstance(config.get("architecture"), str) or not config["architecture"]:
        raise bad("architecture", "is missing or not a string")
    n = config.get("num_classes")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise bad("num_classes", f"must be a positive integer, got {n!r}")
    pcfg = config.get("pretrained_cfg")
    if not isinstance(pcfg, dict):
        raise bad("pretrained_cfg", "is missing (it holds the preprocessing)")
    size = pcfg.get("input_size")
    if not (isinstance(size, list) and len(size) == 3 and all(_positive_int(v) for v in size)):
        raise bad("pretrained_cfg.input_size", f"must be [channels, height, width], got {size!r}")
    for key in ("mean", "std"):
        values = pcfg.get(key)
        if not (
            isinstance(values, list)
            and len(values) == size[0]
            and all(_finite_number(v) for v in values)
        ):
            raise bad(f"pretrained_cfg.{key}", f"must be {size[0]} numbers, got {values!r}")
    labels = config.get("label_names")
    if labels is not None and (
        not isinstance(labels, list)
        or len(labels) != n
        or not all(isinstance(x, str) for x in labels)
    ):
        raise bad("label_names", f"must be {n} strings (num_classes), got {labels!r}"[:200])
    ft = config.get("finetune", {})
    thresholds = ft.get("thresholds") if isinstance(ft, dict) and ft.get("multi_label") else None
    if thresholds is not None and (
        not isinstance(thresholds, list)
        or len(thresholds) != n
        or not all(_finite_number(t) for t in thresholds)
    ):
        # regression (review): a short list silently never chose the labels past its end
        raise bad(
            "finetune.thresholds", f"must be {n} numbers (one per label), got {thresholds!r}"[:200]
        )
    args = config.get("model_args", {})
    if not isinstance(args, dict):
        raise bad("model_args", "must be an object")
    smuggled = sorted(set(args) & set(FORBIDDEN_MODEL_ARGS))
    if smuggled:
        raise bad(
            f"model_args.{smuggled[0]}",
            "is not allowed in a run directory (it would load other files or weights)",
        )


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
