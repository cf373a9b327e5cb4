"""The training loop: one flat loop, one mixed-precision path, validation every epoch.

``autocast(dtype)`` with ``GradScaler(enabled=fp16)``; the precision comes resolved in the
``Runtime`` (see ``runtime.resolve_precision`` for the measurements). One public step
(``forward_backward`` then ``optimizer_step``) serves the epoch loop and the LR range test alike.
The best epoch by validation score is handed to ``save_best`` as soon as it is reached; progress
and epoch lines are events (``finetune.events``), never prints.

Example:
    >>> trainer = Trainer(model, policy=report, optimizer=opt, scheduler=sched,
    ...                   optim=cfg.optim, train=cfg.train, runtime=rt, task=task)  # doctest: +SKIP
    >>> history = trainer.fit(train_loader, val_loader, run_dir="runs/x")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from .._io import METRICS_NAME, append_jsonl
from ..config import OptimConfig, TrainConfig
from ..events import Progress, emit
from .distributed import all_reduce_sum
from .interrupt import StopRequested, closing, deferred_interrupt
from .loss import build_loss, build_mixup, target_classes
from .optim import build_param_groups, peak_lr
from .policy import PolicyReport, refresh_report, set_train_mode, thaw_for_epoch
from .resume import FitHistory, load_state, save_state, skip_batches
from .runtime import PRECISIONS, Runtime, Task

__all__ = ["Trainer", "FitHistory", "StopRequested"]


class Trainer:
    """Fits a classifier; see the module docstring.

    Args:
        model: what runs forward (the model, or its DistributedDataParallel wrapper).
        policy: the freezing plan (BatchNorm modes, gradual unfreezing).
        optimizer, scheduler: None for a Trainer that only evaluates.
        optim, train: the run's config sections (loss, clipping, accumulation, mixup, EMA,
            early stopping, NaN policy, save cadence).
        runtime: device, precision, channels_last, processes.
        task: classes, multi-label, class weights, normalisation.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        policy: PolicyReport,
        optimizer: Optional[torch.optim.Optimizer] = None,
        scheduler=None,
        optim: OptimConfig = OptimConfig(),
        train: TrainConfig = TrainConfig(),
        runtime: Runtime = Runtime(),
        task: Task = Task(),
    ):
        self.model = model
        self.inner = (
            model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        )
        self.policy, self.optimizer, self.scheduler = policy, optimizer, scheduler
        self.optim, self.train, self.runtime, self.task = optim, train, runtime, task
        self.device = runtime.device
        self.dtype = PRECISIONS[runtime.precision]
        self.loss_fn = build_loss(task, label_smoothing=optim.label_smoothing, device=self.device)
        self.score_name = "val_map" if task.multilabel else "val_accuracy"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=runtime.precision == "fp16")
        self.mixup = build_mixup(train, optim, task)
        self.step = 0
        self.skipped_batches = 0
        self.batches_done = 0  # optimizer-step-complete batches of the running epoch
        self.stop_requested = False  # set by the first Ctrl-C during fit
        self.skip_batches = 0  # batches of the first epoch a mid-epoch resume skips
        self._checkpoint = None  # (run_dir, history) while fit runs with a run_dir
        self.loggers: list = []  # finetune.train.loggers: each gets the history after an epoch
        self.ema = None
        # the run's length: train.epochs, or planned by a --budget planner (budget.py), which
        # may also end the last epoch early at total_steps
        self.epochs, self.total_steps, self.planner = train.epochs, None, None
        self.clock_start = time.perf_counter()  # the start of the run's time (FitHistory.seconds)
        if train.ema:
            from timm.utils import ModelEmaV3

            # decay warms up as 1 - (1 + step)^-3/4 to at most ema_decay (timm's EMA warmup;
            # power 3/4 reaches 0.999 at 10k steps). A constant 0.999 over a fine-tune's few
            # hundred steps keeps most of the starting weights: on elpv (290 steps, 90 s) the
            # EMA scored 0.72 val accuracy, the majority class, against the model's 0.84
            self.ema = ModelEmaV3(
                self.inner,
                decay=train.ema_decay,
                use_warmup=True,
                warmup_power=0.75,
                device=self.device,
            )
        # uint8 batches (training transforms stop before normalising) are normalised here
        self.mean255 = torch.tensor(task.mean, device=self.device).view(1, -1, 1, 1) * 255
        self.std255 = torch.tensor(task.std, device=self.device).view(1, -1, 1, 1) * 255
        self.inner.to(device=self.device, memory_format=runtime.memory_format)

    # -- one step --------------------------------------------------------------------------

    def autocast(self):
        return torch.autocast(
            self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
        )

    def to_device(self, images: torch.Tensor, targets: torch.Tensor):
        """Move a batch; uint8 images are normalised with the backbone's mean/std."""
        non_blocking = self.device.type == "cuda"
        images = images.to(self.device, non_blocking=non_blocking)
        if images.dtype == torch.uint8:
            images = (images.float() - self.mean255) / self.std255
        images = images.contiguous(memory_format=self.runtime.memory_format)
        return images, targets.to(self.device, non_blocking=non_blocking)

    def forward_backward(self, images, targets, *, mix: bool = False, scale: float = 1.0):
        """Forward and (scaled) backward of one batch already on the device. Returns
        ``(loss, logits)``, or None when the loss is non-finite under ``nan_policy skip-batch``
        (no backward: the weights never see it)."""
        if mix:
            images, targets = self.mixup(images, targets)
        with self.autocast():
            logits = self.model(images)
            loss = self.loss(logits, targets)
        if self.train.nan_policy == "skip-batch" and not bool(torch.isfinite(loss)):
            self.skipped_batches += 1
            return None
        self.scaler.scale(loss * scale).backward()
        return loss, logits

    def optimizer_step(self) -> None:
        """Clip, step (through the GradScaler), advance the schedule and the EMA."""
        if self.optim.clip_grad:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], self.optim.clip_grad
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.scheduler.step_update(self.step)
        if self.ema is not None:
            self.ema.update(self.inner, step=self.step)

    def loss(self, logits, targets):
        """The training loss of a batch (class indices, or soft targets: mixup, a teacher)."""
        return self.loss_fn(logits, targets)

    # -- epochs ----------------------------------------------------------------------------

    def fit(
        self,
        train_loader,
        val_loader=None,
        *,
        run_dir: Optional[str | Path] = None,
        save_best: Optional[Callable] = None,
        start_epoch: int = 0,
        history: Optional[FitHistory] = None,
    ) -> FitHistory:
        """Train until ``train.epochs``; after each epoch validate, call
        ``save_best(model, epoch)`` when the validation score improved (every epoch without
        ``val_loader``), and, with ``run_dir``, append to metrics.jsonl and write the resumable
        state. ``start_epoch``/``history`` continue a resumed run (see ``load_state``)."""
        history = history or FitHistory()
        if history.stopped_early:  # a resumed run that had already stopped early
            return history
        with deferred_interrupt(self), closing(self.loggers):
            self.clock_start = time.perf_counter() - history.seconds
            self._checkpoint = (run_dir, history) if run_dir is not None else None
            epoch = start_epoch
            while epoch < self.epochs:  # a budget re-plans self.epochs as it goes
                if (
                    self._epoch(epoch, train_loader, val_loader, run_dir, history, save_best)
                    is None
                ):
                    break
                epoch += 1
        return history

    def _epoch(
        self, epoch, train_loader, val_loader, run_dir, history, save_best
    ) -> Optional[dict]:
        """One epoch with its validation, bookkeeping and saves; None when the run stops early."""
        self.thaw(epoch + 1)
        step0 = self.step
        t0 = time.perf_counter()
        try:
            train_loss, train_acc, seen = self._train_epoch(train_loader, epoch)
        except StopRequested:  # first Ctrl-C, at a step boundary: keep the partial epoch
            if run_dir is not None and self.batches_done:
                self.save_state(
                    run_dir, epoch, history, train_loader, batches_done=self.batches_done
                )
            raise
        train_seconds = time.perf_counter() - t0
        val_loss = val_score = None
        if val_loader is not None:
            val_loss, logits, targets = self.evaluate(val_loader)
            # regression: NaN logits gave a finite accuracy (argmax) and were saved as best
            self._check_finite(
                val_loss if bool(torch.isfinite(logits).all()) else math.nan, "validation loss"
            )
            val_score = self.score(logits, targets)
        record = dict(
            epoch=epoch + 1,
            step=self.step,
            train_loss=train_loss,
            train_accuracy=train_acc,
            val_loss=val_loss,
            **{self.score_name: val_score},
            lr=max(g["lr"] for g in self.optimizer.param_groups),
            train_images_per_s=seen / max(train_seconds, 1e-9),
            epoch_seconds=time.perf_counter() - t0,
        )
        # without validation data the last epoch is the one kept
        improved = val_score is None or val_score > history.best_val_accuracy
        if improved:
            history.best_epoch = epoch + 1
            history.best_val_accuracy = -1.0 if val_score is None else val_score
        record["best"] = improved
        if self.ema is not None and val_loader is not None:
            _, ema_logits, ema_targets = self.evaluate(val_loader, model=self.ema.module)
            record[self.score_name + "_ema"] = self.score(ema_logits, ema_targets)
        if self.skipped_batches:
            record["skipped_batches"] = self.skipped_batches
        history.epochs.append(record)
        history.seconds = time.perf_counter() - self.clock_start
        ends = self.total_steps is not None and self.step >= self.total_steps
        epochs = epoch + 1 if ends else self.epochs
        stale = epoch + 1 - history.best_epoch
        stop = bool(self.train.patience and val_score is not None and stale >= self.train.patience)
        if stop:  # before the state is saved: a resumed run stays stopped
            history.stopped_early = epoch + 1
        if improved and save_best is not None:
            save_best(self.inner, epoch + 1)
        last = epoch + 1 == epochs
        saved = run_dir is not None and ((epoch + 1) % self.train.save_every == 0 or last or stop)
        halt = self._write_epoch(run_dir, record, epoch + 1, history, train_loader, saved)
        epochs = epoch + 1 if halt else epochs  # a logger ends the run here (a tuner's budget)
        if self.planner is not None and epoch + 1 < epochs:  # re-plan from measured times
            self.planner.after_epoch(
                self, steps=self.step - step0, train_seconds=train_seconds,
                epoch_seconds=time.perf_counter() - t0,
            )  # fmt: skip
            epochs = self.epochs
            # regression: a re-plan that ends the run here left --save-every N's older state
            if run_dir is not None and not saved and epoch + 1 >= epochs:
                self.save_state(run_dir, epoch + 1, history, train_loader)
        eta = history.seconds / len(history.epochs) * (epochs - epoch - 1)  # seconds
        emit("epoch", record=record, epochs=epochs, score_name=self.score_name, eta=eta)
        if self.stop_requested:  # Ctrl-C during the epoch's last step: it is saved whole
            if run_dir is not None and not stop:
                self.save_state(run_dir, epoch + 1, history, train_loader)
            raise StopRequested
        if stop:
            emit("info", f"early stop: no better {self.score_name} for {self.train.patience} "
                         f"epochs (best epoch {history.best_epoch})")  # fmt: skip
        elif halt:
            history.halted = f"stopped after epoch {epoch + 1} of {self.epochs}: {halt}"
            emit("info", history.halted)
        return None if stop or halt else record

    def _write_epoch(
        self, run_dir, record, epochs_done, history, train_loader, save
    ) -> Optional[str]:
        """The epoch's metrics line and loggers, and with ``save`` the resumable state; returns
        why a logger asked the run to end after this epoch (its ``halt``, read after
        ``log_epochs``), else None. The run then finishes as if it ended on time (best
        checkpoint, final evaluation), where raising from ``log_epochs`` abandons it; its state
        is saved, not marked stopped like an early stop's, so a resume goes on. A collective:
        every rank calls it once per epoch (the loggers run on rank 0 only)."""
        halt = None
        if run_dir is not None:
            append_jsonl(Path(run_dir) / METRICS_NAME, record)
            for logger in self.loggers:
                logger.log_epochs(history.epochs)
            asked = (getattr(lg, "halt", None) for lg in self.loggers)
            halt = next((h for h in asked if isinstance(h, str) and h), None)
            if save or halt:
                self.save_state(run_dir, epochs_done, history, train_loader)
        # every rank ends with rank 0, or the others wait at their next all-reduce for good
        (halted,) = all_reduce_sum([float(halt is not None)], self.runtime.dist, self.device)
        return halt or ("rank 0's loggers asked the run to end" if halted else None)

    def _train_epoch(self, loader, epoch: int) -> tuple[float, float, int]:
        set_train_mode(self.inner, self.policy)
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):  # the epoch's shuffle: resumable, the same on all ranks
            sampler.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)  # float: multi-label adds fractions
        seen, n, accum = 0, len(loader), self.optim.accum_steps
        mixing = self.mixup is not None and epoch < self.epochs - self.train.mixup_off_epochs
        self.optimizer.zero_grad(set_to_none=True)
        self.batches_done, skip, self.skip_batches = 0, self.skip_batches, 0
        batches = enumerate(loader)
        if skip:  # resumed mid-epoch: the same epoch order, without loading what already trained
            batches = enumerate(skip_batches(loader, skip), start=skip)
            self.batches_done = skip
        with Progress(f"epoch {epoch + 1}/{self.epochs}", total=n, key="train") as bar:
            for i, (images, targets) in batches:
                images, labels = self.to_device(images, targets)
                group = min(accum, n - i // accum * accum)  # the last group may be shorter
                out = self.forward_backward(
                    images, labels, scale=1 / group, mix=mixing and len(labels) % 2 == 0
                )
                if out is None:
                    continue
                stepped = (i + 1) % accum == 0 or i + 1 == n
                if stepped:
                    self.optimizer_step()
                    self._after_step(i, n, epoch, loader)
                loss, logits = out
                loss_sum += loss.detach() * len(labels)
                if self.task.multilabel:  # label-wise accuracy at probability 0.5
                    correct += ((logits.detach() > 0) == (labels > 0.5)).float().mean(1).sum()
                else:
                    correct += (logits.detach().argmax(1) == target_classes(labels)).sum()
                seen += len(labels)
                if bar.due(i + 1):  # the only host-device syncs in the loop
                    self._check_finite(float(loss_sum) / max(seen, 1))
                    rate = seen / max(time.perf_counter() - bar.start, 1e-9)
                    bar.update(
                        i + 1,
                        f"loss {float(loss_sum) / max(seen, 1):.4f} acc "
                        f"{float(correct) / max(seen, 1):.4f} {rate:.1f} img/s",
                        force=True,
                    )
                if stepped and self.total_steps is not None and self.step >= self.total_steps:
                    break  # the budget's last, partial epoch
        loss_total, correct_total, seen = all_reduce_sum(
            [float(loss_sum), float(correct), float(seen)], self.runtime.dist, self.device
        )
        seen = int(seen)
        return loss_total / max(seen, 1), correct_total / max(seen, 1), seen

    def _after_step(self, i: int, n: int, epoch: int, loader) -> None:
        """Mid-epoch saves and the Ctrl-C stop, both at an optimizer-step boundary."""
        self.batches_done = i + 1
        if self.planner is not None:
            self.planner.after_step(self, in_epoch=i + 1)
        every = self.train.save_every_steps
        if every and self._checkpoint is not None and self.step % every == 0 and i + 1 < n:
            run_dir, history = self._checkpoint
            self.save_state(run_dir, epoch, history, loader, batches_done=self.batches_done)
        if self.stop_requested and i + 1 < n:  # Ctrl-C, between steps
            raise StopRequested

    def _check_finite(self, value: float, what: str = "training loss") -> None:
        """A diverged run ends with an error that says what was kept; it never saves NaN."""
        if math.isfinite(value):
            return
        run_dir, history = self._checkpoint or (None, None)
        if history is not None and history.best_epoch > 0:
            kept = f"the best checkpoint (epoch {history.best_epoch}) in {run_dir} is kept"
        else:
            kept = "no checkpoint was written"
        raise FloatingPointError(
            f"non-finite {what} (detected at step {self.step}): the model diverged; {kept}. "
            "Lower --lr, use --clip-grad, or --nan-policy skip-batch"
        )

    def score(self, logits: torch.Tensor, targets: torch.Tensor) -> float:
        """Validation score: accuracy, or mAP for multi-label tasks."""
        if self.task.multilabel:
            from .metrics import multilabel_report

            names = [str(i) for i in range(logits.shape[1])]
            mean_ap = multilabel_report(logits, targets, names)["mAP"]
            return 0.0 if mean_ap is None else mean_ap  # no label with a positive in val
        return float((logits.argmax(1) == targets).float().mean())

    def thaw(self, epoch: int) -> None:
        """Gradual unfreezing: thaw the stages due at the start of 1-based ``epoch`` and give
        their parameters to the optimizer, one stage at a time in thaw order (so a resumed run
        rebuilds the same param groups)."""
        if not self.policy.thaw_epochs:
            return
        for stage, params in thaw_for_epoch(self.inner, self.policy, epoch):
            groups = build_param_groups(
                self.inner, self.optim, self.policy.stages, only=set(params)
            )
            self.scheduler.add_param_groups(groups, step=self.step)
            count = sum(p.numel() for g in groups for p in g["params"])
            emit(
                "info",
                f"epoch {epoch}: thawed {stage} ({count:,} params) at lr "
                f"{groups[0]['lr']:.3g} now (peak {peak_lr(self.optim) * groups[0]['lr_scale']:.3g}, "
                "following the schedule)",
            )
        self.policy = refresh_report(self.inner, self.policy)

    def save_state(
        self, run_dir, epoch: int, history: FitHistory, train_loader, batches_done: int = 0
    ) -> None:
        """Write the resumable state (see ``finetune.train.resume``)."""
        save_state(
            self,
            run_dir,
            epoch=epoch,
            history=history,
            loader=train_loader,
            batches_done=batches_done,
        )

    def load_state(self, run_dir, train_loader) -> tuple[int, FitHistory]:
        """Restore a run written by ``save_state``; returns (epochs done, history)."""
        return load_state(self, run_dir, train_loader)

    @torch.inference_mode()
    def evaluate(
        self, loader, model: Optional[nn.Module] = None
    ) -> tuple[float, torch.Tensor, torch.Tensor]:
        """Mean loss, then all logits and targets (on CPU, float32) of ``loader``."""
        model = model if model is not None else self.model
        model.eval()
        all_logits, all_targets = [], []
        loss_sum, seen = 0.0, 0
        # a live bar in a terminal; no log lines (the epoch line follows at once)
        bar = Progress("validating", total=len(loader), key="eval", log=False)
        for images, targets in bar.wrap(loader):
            images, targets = self.to_device(images, targets)
            with self.autocast():
                logits = model(images)
            logits = logits.float()
            if self.task.multilabel:
                loss_sum += float(
                    nn.functional.binary_cross_entropy_with_logits(
                        logits, targets.float(), reduction="sum"
                    )
                ) / max(1, logits.shape[1])
            else:
                loss_sum += float(nn.functional.cross_entropy(logits, targets, reduction="sum"))
            seen += len(targets)
            all_logits.append(logits.cpu())
            all_targets.append(targets.cpu())
        if not all_logits:
            return 0.0, torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
        return loss_sum / max(seen, 1), torch.cat(all_logits), torch.cat(all_targets)
