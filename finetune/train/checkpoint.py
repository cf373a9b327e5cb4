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
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from torch import nn

from .._io import (
    CONFIG_NAME,
    METRICS_NAME,
    RUN_FILES,
    SKIPPED_NAME,
    WEIGHTS_NAME,
    atomic_path,
    read_run_config,
)

__all__ = [
    "prepare_run_dir",
    "shared_run_dir",
    "default_run_dir",
    "write_skipped",
    "save_weights",
    "save_run_config",
    "check_weights_file",
    "load_run",
]

FORMAT_VERSION = 1


def prepare_run_dir(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Create the run directory; refuse one that already holds a run unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(
            f"output {path} exists and is not a directory; choose another --output"
        )
    held = [n for n in (WEIGHTS_NAME, CONFIG_NAME, METRICS_NAME) if (path / n).exists()]
    if held and not overwrite:
        raise FileExistsError(
            f"output {path} already holds a run ({', '.join(held)}); "
            "choose another --output or pass --overwrite"
        )
    path.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:  # --overwrite: nothing of the old run may mix with the new one
        target = path / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    return path


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
    weights = run_dir / WEIGHTS_NAME
    check_weights_file(weights)
    try:
        arch = str(config.get("architecture", ""))
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
    except (RuntimeError, KeyError) as e:  # load_state_dict mismatches
        raise ValueError(
            f"{weights}: weights do not fit {config.get('architecture')} "
            f"({str(e).splitlines()[0][:200]}); the run directory is damaged"
        ) from None
    return model.to(device).eval(), config


def default_run_dir(name: str) -> Path:
    """``runs/<backbone>-<timestamp>``, the backbone name made safe for a folder name."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    return Path("runs") / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


def shared_run_dir(resume, output: Optional[str], backbone: str, *, overwrite: bool, dist) -> Path:
    """The run directory, created by rank 0; every rank gets rank 0's path (its timestamp)."""
    if resume:
        return Path(resume)
    path = None
    if dist.is_main:
        path = prepare_run_dir(output or default_run_dir(backbone), overwrite=overwrite)
    if dist.enabled:
        import torch

        shared = [str(path) if path else None]
        torch.distributed.broadcast_object_list(shared, src=0)
        path = Path(shared[0])
    return path


def write_skipped(run_dir: Path, skipped) -> None:
    """``skipped_files.txt``: one ``path<TAB>reason`` line per image the scan left out."""
    if skipped:
        with atomic_path(run_dir / SKIPPED_NAME) as tmp:
            Path(tmp).write_text("".join(f"{p}\t{why}\n" for p, why in skipped))
