"""The training loop: one flat loop, one mixed-precision path, validation every epoch.

``autocast(dtype)`` with ``GradScaler(enabled=fp16)``; ``precision="auto"`` picks bf16 on CUDA
devices that support it (else fp16), and fp32 on CPUs (see ``resolve_precision`` for the
measurements). The best epoch by validation
accuracy is written to the run directory as soon as it is reached.

Example:
    >>> trainer = Trainer(model, optimizer=opt, scheduler=sched, policy=report)  # doctest: +SKIP
    >>> history = trainer.fit(train_loader, val_loader, epochs=5, run_dir="runs/x")  # doctest: +SKIP
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .checkpoint import append_metrics, save_weights
from .policy import PolicyReport, set_train_mode

__all__ = ["Trainer", "FitHistory", "resolve_device", "resolve_precision", "cpu_has_native_bf16"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here; use --device cpu or auto")
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
        warnings.warn("--precision bf16 on a CPU without native bf16: expect 10-16x slower steps "
                      "than fp32 (measured on AVX2); use --precision auto", stacklevel=2)
    return precision


@dataclass
class FitHistory:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_accuracy: float = -1.0
    seconds: float = 0.0


class Trainer:
    """Fits a classifier; see the module docstring."""

    def __init__(self, model: nn.Module, *, optimizer: torch.optim.Optimizer, scheduler,
                 policy: PolicyReport, device: torch.device = torch.device("cpu"),
                 precision: str = "fp32", channels_last: bool = False,
                 label_smoothing: float = 0.0, console=None, progress: bool = True):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.policy = policy
        self.device = device
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.console = console
        self.progress = progress
        self.step = 0
        self.model.to(device=device, memory_format=self.memory_format)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                              enabled=self.dtype is not None)

    def _to_device(self, images, targets):
        non_blocking = self.device.type == "cuda"
        images = images.to(self.device, non_blocking=non_blocking, memory_format=self.memory_format)
        return images, targets.to(self.device, non_blocking=non_blocking)

    def fit(self, train_loader, val_loader=None, *, epochs: int, run_dir: Optional[str | Path] = None,
            weights_metadata: Optional[dict[str, str]] = None) -> FitHistory:
        """Train ``epochs`` epochs; after each, validate and keep the best weights in ``run_dir``
        (the last epoch's when there is no ``val_loader``)."""
        history = FitHistory()
        start = time.perf_counter()
        for epoch in range(epochs):
            t0 = time.perf_counter()
            train_loss, train_acc, seen = self._train_epoch(train_loader, epoch, epochs)
            train_seconds = time.perf_counter() - t0
            val_loss = val_acc = None
            if val_loader is not None:
                val_loss, logits, targets = self.evaluate(val_loader)
                val_acc = float((logits.argmax(1) == targets).float().mean())
            record = dict(epoch=epoch + 1, step=self.step, train_loss=train_loss,
                          train_accuracy=train_acc, val_loss=val_loss, val_accuracy=val_acc,
                          lr=self.optimizer.param_groups[0]["lr"],
                          train_images_per_s=seen / max(train_seconds, 1e-9),
                          epoch_seconds=time.perf_counter() - t0)
            # without validation data the last epoch is the one kept
            improved = val_acc is None or val_acc > history.best_val_accuracy
            if improved:
                history.best_epoch = epoch + 1
                history.best_val_accuracy = -1.0 if val_acc is None else val_acc
                if run_dir is not None:
                    save_weights(run_dir, self.model, {**(weights_metadata or {}),
                                                       "epoch": str(epoch + 1)})
            record["best"] = improved
            history.epochs.append(record)
            if run_dir is not None:
                append_metrics(run_dir, record)
            self._log_epoch(record, epochs)
        history.seconds = time.perf_counter() - start
        return history

    def _train_epoch(self, loader, epoch: int, epochs: int) -> tuple[float, float, int]:
        set_train_mode(self.model, self.policy)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        bar = _EpochBar(self.console, f"epoch {epoch + 1}/{epochs}", len(loader), self.progress)
        with bar:
            for i, (images, targets) in enumerate(loader):
                images, targets = self._to_device(images, targets)
                with self._autocast():
                    logits = self.model(images)
                    loss = self.loss_fn(logits, targets)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.step += 1
                self.scheduler.step_update(self.step)
                loss_sum += loss.detach() * len(targets)
                correct += (logits.detach().argmax(1) == targets).sum()
                seen += len(targets)
                if bar.due(i):  # the only host-device syncs in the loop
                    current = float(loss_sum) / seen
                    if not math.isfinite(current):
                        raise FloatingPointError(f"non-finite training loss (detected at step {self.step}); "
                                                 "lower --lr or use --precision fp32")
                    bar.update(i + 1, seen, loss=current, acc=float(correct) / seen)
        return float(loss_sum) / max(seen, 1), float(correct) / max(seen, 1), seen

    @torch.inference_mode()
    def evaluate(self, loader) -> tuple[float, torch.Tensor, torch.Tensor]:
        """Mean loss, then all logits and targets (on CPU, float32) of ``loader``."""
        self.model.eval()
        all_logits, all_targets = [], []
        loss_sum, seen = 0.0, 0
        for images, targets in loader:
            images, targets = self._to_device(images, targets)
            with self._autocast():
                logits = self.model(images)
            logits = logits.float()
            loss_sum += float(nn.functional.cross_entropy(logits, targets, reduction="sum"))
            seen += len(targets)
            all_logits.append(logits.cpu())
            all_targets.append(targets.cpu())
        if not all_logits:
            return 0.0, torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
        return loss_sum / max(seen, 1), torch.cat(all_logits), torch.cat(all_targets)

    def _log_epoch(self, r: dict, epochs: int) -> None:
        if self.console is None:
            return
        val = "no val data" if r["val_accuracy"] is None else \
            f"val loss {r['val_loss']:.4f} acc {r['val_accuracy']:.4f}{' *' if r['best'] else ''}"
        self.console.print(
            f"epoch {r['epoch']}/{epochs}  train loss {r['train_loss']:.4f} acc "
            f"{r['train_accuracy']:.4f} | {val} | {r['train_images_per_s']:.1f} img/s, "
            f"{r['epoch_seconds']:.0f} s")


class _EpochBar:
    """A rich progress bar for one epoch, refreshed at most ~4 times a second."""

    def __init__(self, console, title: str, total: int, enabled: bool):
        self.enabled = enabled and console is not None
        self.total = total
        self.last = 0.0
        self.start = time.perf_counter()
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeRemainingColumn)

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeRemainingColumn(),
                                     TextColumn("{task.fields[stats]}"), console=console,
                                     transient=True)
            self.task = self.progress.add_task(title, total=total, stats="")

    def __enter__(self):
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.stop()

    def due(self, i: int) -> bool:
        now = time.perf_counter()
        if i + 1 == self.total or now - self.last >= 0.25:
            self.last = now
            return True
        return False

    def update(self, done: int, seen: int, *, loss: float, acc: float) -> None:
        if self.enabled:
            rate = seen / max(time.perf_counter() - self.start, 1e-9)
            self.progress.update(self.task, completed=done,
                                 stats=f"loss {loss:.4f} acc {acc:.4f} {rate:.1f} img/s")
