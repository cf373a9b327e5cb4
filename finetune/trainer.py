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

import contextlib
import json
import math
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from .checkpoint import append_metrics, atomic_path
from .config import OptimConfig
from .distributed import DistInfo, all_reduce_sum
from .optim import add_param_groups, build_param_groups
from .policy import PolicyReport, refresh_report, set_train_mode, thaw_for_epoch

__all__ = ["Trainer", "FitHistory", "resolve_device", "resolve_precision", "cpu_has_native_bf16"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
LAST_WEIGHTS = "last.safetensors"
STATE_NAME = "trainer_state.pt"


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


class StopRequested(KeyboardInterrupt):
    """The first Ctrl-C, acted on at an optimizer-step boundary (the state is consistent)."""


@dataclass
class FitHistory:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_accuracy: float = -1.0
    seconds: float = 0.0
    stopped_early: int = 0  # epoch at which early stopping ended the run (0 = it did not)


class Trainer:
    """Fits a classifier; see the module docstring."""

    def __init__(self, model: nn.Module, *, optimizer: torch.optim.Optimizer, scheduler,
                 policy: PolicyReport, device: torch.device = torch.device("cpu"),
                 precision: str = "fp32", channels_last: bool = False,
                 label_smoothing: float = 0.0, console=None, progress: bool = True,
                 optim_cfg: Optional[OptimConfig] = None,
                 class_weights: Optional[torch.Tensor] = None, multilabel: bool = False,
                 mean: tuple[float, ...] = (0.485, 0.456, 0.406),
                 std: tuple[float, ...] = (0.229, 0.224, 0.225),
                 mixup=None, mixup_off_epoch: int = 0, ema_decay: Optional[float] = None,
                 nan_policy: str = "stop", patience: int = 0, save_every: int = 1,
                 save_every_steps: int = 0, dist: Optional[DistInfo] = None):
        self.model = model  # what runs forward: the model, or its DistributedDataParallel
        self.inner = getattr(model, "module", model) if isinstance(
            model, nn.parallel.DistributedDataParallel) else model
        self.dist = dist or DistInfo()
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.policy = policy
        self.device = device
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = class_weights.to(device) if class_weights is not None else None
        self.multilabel = multilabel
        if multilabel:  # sigmoid per label; class_weights are BCE pos_weights here
            bce = nn.BCEWithLogitsLoss(pos_weight=weight)
            self.loss_fn = lambda logits, t: bce(logits, t * (1 - label_smoothing)
                                                 + label_smoothing / 2)
        else:
            self.loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        # the validation score that picks the best epoch
        self.score_name = "val_map" if multilabel else "val_accuracy"
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.console = console
        self.progress = progress
        self.optim_cfg = optim_cfg or OptimConfig()
        self.step = 0
        self.clip_grad = self.optim_cfg.clip_grad
        self.accum_steps = self.optim_cfg.accum_steps
        self.mixup = mixup                  # timm Mixup, or None
        self.mixup_off_epoch = mixup_off_epoch  # 0-based epoch from which mixing stops
        self.nan_policy = nan_policy
        self.patience = patience
        self.save_every = save_every
        self.save_every_steps = save_every_steps  # also mid-epoch, every N optimizer steps
        self._checkpoint = None  # (run_dir, history, loader) while fit runs with a run_dir
        self.skipped_batches = 0
        self.batches_done = 0   # optimizer-step-complete batches of the running epoch
        self.stop_requested = False  # set by the first Ctrl-C during fit
        self.skip_batches = 0   # batches of the first epoch a mid-epoch resume skips
        self.ema = None
        if ema_decay is not None:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.inner, decay=ema_decay, device=device)
        # uint8 batches (training transforms stop before normalising) are normalised here
        self.mean255 = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std255 = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self.inner.to(device=device, memory_format=self.memory_format)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                              enabled=self.dtype is not None)

    def _to_device(self, images, targets):
        non_blocking = self.device.type == "cuda"
        images = images.to(self.device, non_blocking=non_blocking)
        if images.dtype == torch.uint8:
            images = (images.float() - self.mean255) / self.std255
        images = images.contiguous(memory_format=self.memory_format)
        return images, targets.to(self.device, non_blocking=non_blocking)

    def fit(self, train_loader, val_loader=None, *, epochs: int,
            run_dir: Optional[str | Path] = None, save_best: Optional[Callable] = None,
            start_epoch: int = 0, history: Optional[FitHistory] = None) -> FitHistory:
        """Train until ``epochs``; after each epoch validate, call ``save_best(model, epoch)``
        when validation accuracy improved (every epoch without ``val_loader``), and, with
        ``run_dir``, append to metrics.jsonl and write the resumable state.

        ``start_epoch``/``history`` continue a resumed run (see ``load_state``).
        """
        history = history or FitHistory()
        with _deferred_interrupt(self):
            return self._fit(train_loader, val_loader, epochs, run_dir, save_best, start_epoch,
                             history)

    def _fit(self, train_loader, val_loader, epochs, run_dir, save_best, start_epoch, history):
        if history.stopped_early:  # a resumed run that had already stopped early
            return history
        start = time.perf_counter() - history.seconds
        self._checkpoint = (run_dir, history, train_loader) if run_dir is not None else None
        for epoch in range(start_epoch, epochs):
            self.thaw(epoch + 1)
            t0 = time.perf_counter()
            try:
                train_loss, train_acc, seen = self._train_epoch(train_loader, epoch, epochs)
            except StopRequested:  # first Ctrl-C, at a step boundary: keep the partial epoch
                if run_dir is not None and self.batches_done:
                    self.save_state(run_dir, epoch, history, train_loader,
                                    batches_done=self.batches_done)
                raise
            train_seconds = time.perf_counter() - t0
            val_loss = val_acc = None
            if val_loader is not None:
                val_loss, logits, targets = self.evaluate(val_loader)
                val_acc = self.score(logits, targets)
            record = dict(epoch=epoch + 1, step=self.step, train_loss=train_loss,
                          train_accuracy=train_acc, val_loss=val_loss,
                          **{self.score_name: val_acc},
                          lr=max(g["lr"] for g in self.optimizer.param_groups),
                          train_images_per_s=seen / max(train_seconds, 1e-9),
                          epoch_seconds=time.perf_counter() - t0)
            # without validation data the last epoch is the one kept
            improved = val_acc is None or val_acc > history.best_val_accuracy
            if improved:
                history.best_epoch = epoch + 1
                history.best_val_accuracy = -1.0 if val_acc is None else val_acc
                if save_best is not None:
                    save_best(self.inner, epoch + 1)
            record["best"] = improved
            if self.ema is not None and val_loader is not None:
                _, ema_logits, ema_targets = self.evaluate(val_loader, model=self.ema.module)
                record[self.score_name + "_ema"] = self.score(ema_logits, ema_targets)
            if self.skipped_batches:
                record["skipped_batches"] = self.skipped_batches
            history.epochs.append(record)
            history.seconds = time.perf_counter() - start
            stale = epoch + 1 - history.best_epoch
            stop = self.patience and val_acc is not None and stale >= self.patience
            if run_dir is not None:
                append_metrics(run_dir, record)
                if (epoch + 1) % self.save_every == 0 or epoch + 1 == epochs or stop:
                    self.save_state(run_dir, epoch + 1, history, train_loader)
            self._log_epoch(record, epochs)
            if self.stop_requested:  # Ctrl-C during the epoch's last step: it is saved whole
                if run_dir is not None and not stop:
                    self.save_state(run_dir, epoch + 1, history, train_loader)
                raise StopRequested
            if stop:
                history.stopped_early = epoch + 1
                if self.console is not None:
                    self.console.print(f"early stop: no better {self.score_name} for "
                                       f"{self.patience} epochs (best epoch {history.best_epoch})")
                break
        return history

    def score(self, logits: torch.Tensor, targets: torch.Tensor) -> float:
        """Validation score: accuracy, or mAP for multi-label tasks."""
        if self.multilabel:
            from .metrics import multilabel_report

            return multilabel_report(logits, targets, [str(i) for i in range(logits.shape[1])]
                                     )["mAP"]
        return float((logits.argmax(1) == targets).float().mean())

    def thaw(self, epoch: int) -> None:
        """Gradual unfreezing: thaw the stages due at the start of 1-based ``epoch`` and give
        their parameters to the optimizer, one stage at a time in thaw order (so a resumed run
        rebuilds the same param groups)."""
        if not self.policy.thaw_epochs:
            return
        for stage, params in thaw_for_epoch(self.inner, self.policy, epoch):
            groups = build_param_groups(self.inner, self.optim_cfg, self.policy.stages,
                                        only=set(params))
            add_param_groups(self.optimizer, self.scheduler, groups, base_lr=self.optim_cfg.lr,
                             step=self.step)
            if self.console is not None:
                count = sum(p.numel() for g in groups for p in g["params"])
                self.console.print(
                    f"epoch {epoch}: thawed {stage} ({count:,} params) at lr "
                    f"{groups[0]['lr']:.3g} now (peak {self.optim_cfg.lr * groups[0]['lr_scale']:.3g},"
                    " following the schedule)")
        self.policy = refresh_report(self.inner, self.policy)

    def save_state(self, run_dir, epoch: int, history: FitHistory, train_loader,
                   batches_done: int = 0) -> None:
        """Atomically write what a resumed run needs: the last weights (``last.safetensors``) and
        ``trainer_state.pt`` (optimizer, scheduler, scaler, RNG and data-order state, history).
        ``epoch`` epochs are finished, plus ``batches_done`` batches of the next one (Ctrl-C).
        ``trainer_state.pt`` holds only tensors and plain containers: it loads with
        ``weights_only=True``."""
        from safetensors.torch import save_model

        run_dir = Path(run_dir)
        with atomic_path(run_dir / LAST_WEIGHTS) as tmp:
            save_model(self.inner, tmp, force_contiguous=True)
        generator = getattr(train_loader, "generator", None)
        # the weights travel inside the state file too: one rename, so a kill can never pair
        # new weights with an old optimizer state (last.safetensors is for people and tools)
        state = dict(epoch=epoch, batches_done=batches_done, step=self.step,
                     model={k: v.detach().cpu() for k, v in self.inner.state_dict().items()},
                     stopped_early=history.stopped_early,
                     optimizer=self.optimizer.state_dict(),
                     scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(),
                     history=dict(epochs=history.epochs, best_epoch=history.best_epoch,
                                  best_val_accuracy=history.best_val_accuracy,
                                  seconds=history.seconds),
                     rng=_rng_state(), loader_rng=generator.get_state() if generator else None,
                     ema=self.ema.state_dict() if self.ema is not None else None)
        with atomic_path(run_dir / STATE_NAME) as tmp:
            torch.save(state, tmp)

    def load_state(self, run_dir, train_loader) -> tuple[int, FitHistory]:
        """Restore a run written by ``save_state``; returns (epochs done, history)."""
        run_dir = Path(run_dir)
        try:
            state = torch.load(run_dir / STATE_NAME, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"{run_dir / STATE_NAME} not found: the run never finished "
                                    "an epoch, so there is nothing to resume; start it again")
        except Exception as e:  # a truncated or foreign file
            raise ValueError(f"{run_dir / STATE_NAME}: cannot read ({type(e).__name__}: {e}); "
                             "the resume state is damaged") from None
        self.thaw(state["epoch"])  # the param groups the interrupted run had when it saved
        self.inner.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.step = state["step"]
        self.skip_batches = state.get("batches_done", 0)  # Ctrl-C'd mid-epoch: skip what ran
        _set_rng_state(state["rng"])
        generator = getattr(train_loader, "generator", None)
        if generator is not None and state["loader_rng"] is not None:
            generator.set_state(state["loader_rng"])
        h = state["history"]
        # epochs after the saved state were lost: their metrics lines go too
        with atomic_path(run_dir / "metrics.jsonl") as tmp:
            Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in h["epochs"]))
        return state["epoch"], FitHistory(list(h["epochs"]), h["best_epoch"],
                                          h["best_val_accuracy"], h["seconds"],
                                          state.get("stopped_early", 0))

    def _train_epoch(self, loader, epoch: int, epochs: int) -> tuple[float, float, int]:
        set_train_mode(self.inner, self.policy)
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):  # the epoch's shuffle: resumable, the same on all ranks
            sampler.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)  # float: multi-label adds fractions
        seen = 0
        mixing = self.mixup is not None and epoch < self.mixup_off_epoch
        bar = _EpochBar(self.console, f"epoch {epoch + 1}/{epochs}", len(loader), self.progress)
        self.optimizer.zero_grad(set_to_none=True)
        self.batches_done, skip, self.skip_batches = 0, self.skip_batches, 0
        batches = enumerate(loader)
        if skip:  # resumed mid-epoch: the same epoch order, without loading what already trained
            batches = enumerate(_skip_batches(loader, skip), start=skip)
            self.batches_done = skip
        with bar:
            for i, (images, targets) in batches:
                images, targets = self._to_device(images, targets)
                labels = targets
                if mixing and len(targets) % 2 == 0:  # timm Mixup pairs the batch with its flip
                    images, targets = self.mixup(images, targets)
                with self._autocast():
                    logits = self.model(images)
                    loss = self._loss(logits, targets)
                if self.nan_policy == "skip-batch" and not bool(torch.isfinite(loss)):
                    self.skipped_batches += 1  # no backward: the weights never see it
                    continue
                group = min(self.accum_steps, len(loader) - i // self.accum_steps * self.accum_steps)
                self.scaler.scale(loss / group).backward()  # the last group may be shorter
                if (i + 1) % self.accum_steps == 0 or i + 1 == len(loader):
                    self._optimizer_step()
                    self.batches_done = i + 1
                    if (self.save_every_steps and self._checkpoint is not None
                            and self.step % self.save_every_steps == 0 and i + 1 < len(loader)):
                        run_dir, history, _ = self._checkpoint
                        self.save_state(run_dir, epoch, history, loader,
                                        batches_done=self.batches_done)
                    if self.stop_requested and i + 1 < len(loader):  # Ctrl-C, between steps
                        raise StopRequested
                loss_sum += loss.detach() * len(labels)
                if self.multilabel:  # label-wise accuracy at probability 0.5
                    correct += ((logits.detach() > 0) == labels.bool()).float().mean(1).sum()
                else:
                    correct += (logits.detach().argmax(1) == labels).sum()
                seen += len(labels)
                if bar.due(i):  # the only host-device syncs in the loop
                    current = float(loss_sum) / max(seen, 1)
                    if not math.isfinite(current):
                        raise FloatingPointError(
                            f"non-finite training loss (detected at step {self.step}); the best "
                            "checkpoint so far is kept. Lower --lr, use --clip-grad, or "
                            "--nan-policy skip-batch")
                    bar.update(i + 1, seen, loss=current, acc=float(correct) / max(seen, 1))
        loss_total, correct_total, seen = all_reduce_sum(
            [float(loss_sum), float(correct), float(seen)], self.dist, self.device)
        seen = int(seen)
        return loss_total / max(seen, 1), correct_total / max(seen, 1), seen

    def _loss(self, logits, targets):
        if targets.ndim == 2 and not self.multilabel:  # mixed (soft) targets
            return torch.sum(-targets * torch.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        return self.loss_fn(logits, targets)

    def _optimizer_step(self) -> None:
        if self.clip_grad:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.scheduler.step_update(self.step)
        if self.ema is not None:
            self.ema.update(self.inner, step=self.step)

    @torch.inference_mode()
    def evaluate(self, loader, model: Optional[nn.Module] = None
                 ) -> tuple[float, torch.Tensor, torch.Tensor]:
        """Mean loss, then all logits and targets (on CPU, float32) of ``loader``."""
        model = model if model is not None else self.model
        model.eval()
        all_logits, all_targets = [], []
        loss_sum, seen = 0.0, 0
        for images, targets in loader:
            images, targets = self._to_device(images, targets)
            with self._autocast():
                logits = model(images)
            logits = logits.float()
            if self.multilabel:
                loss_sum += float(nn.functional.binary_cross_entropy_with_logits(
                    logits, targets.float(), reduction="sum")) / max(1, logits.shape[1])
            else:
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
        score = r[self.score_name]
        name = "mAP" if self.multilabel else "acc"
        val = "no val data" if score is None else \
            f"val loss {r['val_loss']:.4f} {name} {score:.4f}{' *' if r['best'] else ''}"
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


def _rng_state() -> dict:
    import random

    import numpy as np

    np_state = np.random.get_state()
    return dict(torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                python=list(random.getstate()[1]),
                python_pos=random.getstate()[2],
                numpy=torch.from_numpy(np_state[1].astype("int64")), numpy_pos=int(np_state[2]))


def _set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype("uint32"), state["numpy_pos"]))


@contextlib.contextmanager
def _deferred_interrupt(trainer: "Trainer"):
    """The first Ctrl-C asks the loop to stop after the current optimizer step, so the saved
    state is consistent; a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True
        if trainer.console is not None:
            trainer.console.print("[yellow]stopping after this step (Ctrl-C again to stop now)[/]")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _skip_batches(loader, skip: int):
    """``loader`` from its ``skip``-th batch on, reading none of the skipped samples (reading them
    would also draw augmentation randomness the uninterrupted run drew only once)."""
    if not isinstance(loader, torch.utils.data.DataLoader) or loader.sampler is None:
        return iter(list(loader)[skip:])
    indices = list(loader.sampler)[skip * loader.batch_size:]
    # a throwaway generator: the iterator's base seed must not come from the global RNG (nor
    # from the loader's, which already drew it for this epoch before the interruption)
    return iter(torch.utils.data.DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=indices,
        num_workers=loader.num_workers, collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory, drop_last=loader.drop_last,
        generator=torch.Generator()))

