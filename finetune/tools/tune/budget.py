"""The study's wall-clock budget: what a trial costs, whether the next one can finish, and how
close the study came to the budget. The clock is injected (``now``) so the accounting can be
tested without waiting.

A trial's cost is measured, not guessed: its wall time splits into epochs (``epoch_seconds`` of
its records) and the rest (model build, data, final evaluation, report). The next trial's
estimate is the mean rest plus the slowest epoch seen times its epochs (freezing less makes
epochs slower, so the slowest is the safe side).

Example:
    >>> budget = StudyBudget(600.0, now=iter([0.0, 100.0, 100.0]).__next__)
    >>> budget.record(wall_s=100.0, epoch_seconds=[20.0] * 4)  # 20 s of build and evaluation
    >>> budget.largest_epochs(3, 10)  # 500 s left: 20 + 20 * e <= 500
    10
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional, Sequence

__all__ = ["StudyBudget"]


class StudyBudget:
    """Seconds for a whole study (None: no limit) and the costs of the trials run so far."""

    def __init__(self, seconds: Optional[float], *, now: Callable[[], float] = time.monotonic):
        self.seconds, self.now = seconds, now
        self.start = now()
        self.overheads: list[float] = []  # seconds of each trial outside its epochs
        self.epoch_s: list[float] = []  # seconds per epoch of each trial

    def elapsed(self) -> float:
        return self.now() - self.start

    def remaining(self) -> float:
        return math.inf if self.seconds is None else self.seconds - self.elapsed()

    def record(self, *, wall_s: float, epoch_seconds: Sequence[float]) -> None:
        """A finished (or pruned) trial's wall time and its epochs' times."""
        if epoch_seconds:
            self.epoch_s.append(sum(epoch_seconds) / len(epoch_seconds))
            self.overheads.append(max(0.0, wall_s - sum(epoch_seconds)))

    def estimate(self, epochs: int) -> Optional[float]:
        """Seconds a trial of ``epochs`` epochs should take; None before any trial ran."""
        if not self.epoch_s:
            return None
        return sum(self.overheads) / len(self.overheads) + max(self.epoch_s) * epochs

    def largest_epochs(self, low: int, high: int) -> Optional[int]:
        """The most epochs in ``[low, high]`` a trial can train and still end within the budget
        (``high`` when nothing is known yet or there is no budget); None when not even ``low``
        fits: the study stops starting trials."""
        remaining = self.remaining()
        if remaining <= 0:
            return None
        if self.seconds is None or not self.epoch_s:
            return high
        fits = [e for e in range(low, high + 1) if self.estimate(e) <= remaining]
        return max(fits) if fits else None

    def room_for_epoch(self, epoch_seconds: Sequence[float]) -> bool:
        """Inside a trial: whether one more epoch like the ones so far, and the trial's final
        evaluation, still end within the budget."""
        if self.seconds is None or not epoch_seconds:
            return True
        rest = sum(self.overheads) / len(self.overheads) if self.overheads else 0.0
        return self.remaining() >= sum(epoch_seconds) / len(epoch_seconds) + rest

    def usage(self) -> str:
        """``9m 41s of 10m (97 %)``, or the elapsed time alone without a budget."""
        used = _clock(self.elapsed())
        if self.seconds is None:
            return used
        return f"{used} of {_clock(self.seconds)} ({100 * self.elapsed() / self.seconds:.0f} %)"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s" if m else f"{s}s"
