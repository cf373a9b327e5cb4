"""``--budget``: plan a run's optimizer steps so that it ends within a wall-clock budget.

Before training, a few forward/backward passes of a copy of the model on random batches give a
first estimate of the seconds per step (``estimate_step_seconds``), from which the run length is
guessed (the augmentation strength depends on it). The Trainer then re-plans from measured
times: after the first ``PLAN_AFTER_STEPS`` steps, and at the end of every epoch (the first epoch
also decodes the images into the cache, so later epochs are faster). A plan is a total number of
optimizer steps; the LR schedule is rebuilt to end at it, so a run ends at the bottom of its
cosine, never cut off half-way, and the last epoch may be a partial one.

Costs that are planned for (all measured in seconds from the budget clock's start): training
steps, each epoch's validation and checkpoint writes, and the final evaluation of the best
epoch on val and test. The scan and the model load happen before the clock starts.

Example:
    >>> plan_steps(budget=100, elapsed=10, step=20, in_epoch=0, steps_per_epoch=50,
    ...            step_seconds=0.5, epoch_overhead=5, final_reserve=5)
    160
"""

from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn

__all__ = ["PLAN_AFTER_STEPS", "estimate_step_seconds", "plan_steps"]

PLAN_AFTER_STEPS = 10  # measured steps before the first re-plan (the first 2 are not timed)
# a step's first estimate: passes until two in a row agree within this fraction, at most
# SETTLE_PASSES (on 2 cores a new size's passes settled by the fifth; see estimate_step_seconds)
SETTLE = 0.15
SETTLE_PASSES = 6
SETTLE_SECONDS = 10.0  # s: past 3 passes, no more once they took this long
EVAL_COST = 0.35  # an evaluation forward costs about this fraction of a training step per image


def plan_steps(
    *,
    budget: float,
    elapsed: float,
    step: int,
    in_epoch: int,
    steps_per_epoch: int,
    step_seconds: float,
    epoch_overhead: float,
    final_reserve: float,
) -> int:
    """The run's total optimizer steps so that it ends within ``budget`` seconds.

    ``elapsed`` seconds are spent and ``step`` steps done, ``in_epoch`` of them in the running
    epoch. Each further step costs ``step_seconds``; each epoch end ``epoch_overhead``
    (validation, saves); the end of the run ``final_reserve``. Full epochs first, then as many
    steps of one more (partial) epoch as fit. Never fewer than ``step``: a spent budget stops the
    run at once.
    """
    left = budget - elapsed - final_reserve
    step_seconds = max(step_seconds, 1e-6)
    extra, room = 0, steps_per_epoch - in_epoch  # steps left in the running epoch
    if room * step_seconds + epoch_overhead <= left:  # it ends, then whole epochs
        left -= room * step_seconds + epoch_overhead
        # counted, not looped: regression, --budget 99999999h planned epoch by epoch for hours
        whole = max(0, math.floor(left / (steps_per_epoch * step_seconds + epoch_overhead)))
        extra, room = room + whole * steps_per_epoch, steps_per_epoch
        left -= whole * (steps_per_epoch * step_seconds + epoch_overhead)
    partial = math.floor((left - epoch_overhead) / step_seconds)
    return step + extra + max(0, min(partial, room - 1))


def estimate_step_seconds(
    model: nn.Module,
    *,
    batch_size: int,
    input_size: tuple[int, int, int],
    device: torch.device,
    memory_format=torch.contiguous_format,
    dtype=None,
    max_passes: int = SETTLE_PASSES,
    max_seconds: float = SETTLE_SECONDS,
    clock=time.perf_counter,
) -> float:
    """Seconds of one training forward/backward of ``model`` on a random batch, timed on a copy
    (the model's weights and BatchNorm statistics are not touched). The first passes at a new
    input size are slower than the rest (allocation, kernel selection), so passes are timed until
    two in a row agree within ``SETTLE`` (at most ``max_passes``, and no more than 3 once they
    took ``max_seconds``: a large model on a CPU keeps its budget for training) and the faster
    of the last two is the estimate. Regression: one untimed and two timed passes read 0.45 s
    per step at 128 px where training then ran at 0.24 s (tf_efficientnet_lite0, batch 32, 2
    cores; its first six passes took 1.68, 0.89, 0.58, 0.32, 0.36, 0.33 s), so a budgeted run
    on elpv chose 96 px in one seed and 128 or 160 px in others on the same machine.

    Example:
        >>> import timm
        >>> net = timm.create_model("test_resnet", num_classes=2)
        >>> estimate_step_seconds(net, batch_size=2, input_size=(3, 32, 32),
        ...                       device=torch.device("cpu")) > 0
        True
    """
    probe = copy.deepcopy(model).to(device).train()
    x = torch.randn(batch_size, *input_size, device=device).contiguous(memory_format=memory_format)
    times = []
    for _ in range(max(3, max_passes)):
        t0 = clock()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = probe(x)
        out.float().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(clock() - t0)
        if len(times) >= 3 and (_settled(times[-2], times[-1]) or sum(times) >= max_seconds):
            break  # the first pass is never used
    del probe
    return min(times[-2:])


def _settled(a: float, b: float) -> bool:
    return abs(a - b) <= SETTLE * min(a, b)


class BudgetPlanner:
    """Re-plans a Trainer's total steps from measured times (see the module docstring).

    ``eval_batches``: validation batches per epoch; ``final_batches``: batches of the final
    evaluation (val and test, twice with EMA); ``step_seconds``: the first estimate.
    """

    def __init__(
        self,
        seconds: float,
        *,
        steps_per_epoch: int,
        eval_batches: int,
        final_batches: int,
        step_seconds: float,
    ):
        self.seconds, self.steps_per_epoch = seconds, steps_per_epoch
        self.eval_batches, self.final_batches = eval_batches, final_batches
        self.step_seconds = step_seconds
        self.eval_seconds = step_seconds * EVAL_COST  # per batch, until a validation is timed
        self.epoch_overhead = eval_batches * self.eval_seconds + SAVE_SECONDS
        self._mark: tuple[float, int] | None = None  # (time, step) where step timing started
        self._timed = False

    def plan(self, trainer, *, in_epoch: int) -> int:
        """Set ``trainer``'s total steps, planned epochs and LR schedule; returns the steps."""
        total = plan_steps(
            budget=self.seconds,
            elapsed=time.perf_counter() - trainer.clock_start,
            step=trainer.step,
            in_epoch=in_epoch,
            steps_per_epoch=self.steps_per_epoch,
            step_seconds=self.step_seconds,
            epoch_overhead=self.epoch_overhead,
            final_reserve=self.final_batches * self.eval_seconds + REPORT_SECONDS,
        )
        if trainer.runtime.dist.enabled:  # every process follows rank 0's plan
            from .distributed import all_reduce_sum

            main = trainer.runtime.dist.is_main
            total = int(all_reduce_sum([float(total if main else 0)], trainer.runtime.dist,
                                       trainer.device)[0])  # fmt: skip
        trainer.total_steps = total
        trainer.epochs = max(1, math.ceil(total / self.steps_per_epoch))
        trainer.scheduler.replan(total, step=trainer.step)
        return total

    def after_step(self, trainer, in_epoch: int) -> None:
        """Time the first steps; re-plan once ``PLAN_AFTER_STEPS`` of them are measured."""
        if self._timed:
            return
        if self._mark is None:
            if in_epoch >= 2:  # the first steps pay for allocation and the first decodes
                self._mark = (time.perf_counter(), trainer.step)
            return
        t0, step0 = self._mark
        if trainer.step - step0 >= PLAN_AFTER_STEPS:
            self.step_seconds = (time.perf_counter() - t0) / (trainer.step - step0)
            self._timed = True
            self.plan(trainer, in_epoch=in_epoch)

    def after_epoch(self, trainer, *, steps: int, train_seconds: float, epoch_seconds: float):
        """Re-plan from the epoch just finished (its steps, training and whole seconds)."""
        if steps:
            self.step_seconds, self._timed = train_seconds / steps, True
        overhead = max(0.0, epoch_seconds - train_seconds)
        if self.eval_batches:
            self.eval_seconds = max(overhead - SAVE_SECONDS, 0.0) / self.eval_batches
        self.epoch_overhead = overhead
        return self.plan(trainer, in_epoch=0)


SAVE_SECONDS = 0.5  # writing the resumable state and the best weights, a small model on disk
REPORT_SECONDS = 1.0  # plots and the model card at the end of the run (small models)
