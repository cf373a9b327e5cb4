"""Where and how a run computes: device, precision, memory format, processes, seeds.

Resolved once per run (``resolve_runtime``) and handed to the Trainer as a frozen ``Runtime``.

Example:
    >>> rt = resolve_runtime(TrainConfig(device="cpu"), model)  # doctest: +SKIP
    >>> rt.device, rt.precision  # doctest: +SKIP
    (device(type='cpu'), 'fp32')
"""

from __future__ import annotations

import os
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from .distributed import DistInfo

__all__ = [
    "Runtime",
    "Task",
    "resolve_runtime",
    "resolve_device",
    "resolve_precision",
    "cpu_has_native_bf16",
    "seed_everything",
    "is_cnn",
    "PRECISIONS",
]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """Device, concrete precision ('fp32', 'bf16', 'fp16'), channels_last, processes."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    channels_last: bool = False
    dist: DistInfo = field(default_factory=DistInfo)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


@dataclass(frozen=True)
class Task:
    """What the model predicts: class count, single- or multi-label, loss weights, and the
    normalisation that uint8 training batches still need (timm prefetcher split)."""

    num_classes: int = 2
    multilabel: bool = False
    class_weights: Optional[torch.Tensor] = None  # CE weights, or BCE pos_weights (multi-label)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)


def resolve_runtime(cfg: TrainConfig, model: nn.Module, dist: Optional[DistInfo] = None) -> Runtime:
    """The run's ``Runtime`` from its train config (``dist`` from ``setup_distributed``)."""
    dist = dist or DistInfo()
    device = resolve_device(cfg.device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    return Runtime(
        device, resolve_precision(cfg.precision, device), cfg.channels_last and is_cnn(model), dist
    )


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA if available else CPU; ``cpu``, ``cuda`` or ``cuda:N``. Anything else, or
    CUDA without a GPU, is a clear error naming the choices."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = str(device).partition(":")
    if kind not in ("cpu", "cuda") or (index and not (kind == "cuda" and index.isdigit())):
        raise ValueError(
            f"--device {device}: not a device finetune runs on; use auto, cpu, cuda or cuda:N"
        )
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {device}: no CUDA device is available here; use --device cpu or auto"
            )
        if index and int(index) >= torch.cuda.device_count():
            raise ValueError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA devices "
                "here (cuda:0 ...)"
            )
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX512-BF16 or AMX); read from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """Concrete precision for ``device``: 'fp32', 'bf16' or 'fp16'."""
    if device.type == "cuda":
        if precision == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return precision
    if precision == "auto":
        # fp32 on every CPU: bf16 autocast measured 10-16x slower on AVX2-only CPUs, and still
        # 15 % slower (56 vs 66 img/s, tf_efficientnet_lite0 training at 128 px) on an AVX512-BF16
        # EPYC, where only plain matmuls gain. Ask for --precision bf16 explicitly to try it.
        return "fp32"
    if precision == "fp16":
        raise ValueError("--precision fp16 needs a CUDA device; use fp32 (or bf16) on CPU")
    if precision == "bf16" and not cpu_has_native_bf16():
        warnings.warn(
            "--precision bf16 on a CPU without native bf16: expect 10-16x slower steps "
            "than fp32 (measured on AVX2); use --precision auto",
            stacklevel=2,
        )
    return precision


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; ``deterministic`` also asks torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # CUBLAS needs a fixed workspace for deterministic matmuls on CUDA
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def is_cnn(model: nn.Module) -> bool:
    """True for convolutional nets (more than one conv), where channels_last pays off."""
    # channels_last pays off for conv nets; a ViT has a single (patch embedding) conv
    return sum(isinstance(m, nn.Conv2d) for m in model.modules()) > 1
