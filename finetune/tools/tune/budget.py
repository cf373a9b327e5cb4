"""The study's wall-clock budget: what a trial costs, whether the next one can finish, and how
close the study came to the budget. The clock is injected (``now``) so the accounting can be
tested without waiting.

A trial's cost is measured, not guessed: its wall time splits into epochs (``epoch_seconds`` of
its records) and the rest (model build, data, final evaluation, report). The next trial's
estimate is the mean rest plus the slowest epoch seen times its epochs (freezing less makes
epochs slower, so the slowest is the safe side).

How the study's time is shared out (``first_slot``, ``next_slot``):

- the first trial, the default run, gets a quarter of the budget as its run's ``--budget`` (all
  of it when the study runs one trial; half when it runs two, and the second is a searched
  config given the rest: a study of two has no final trial);
- while a shortest trial still fits before the final half, a searched trial trains a searched
  number of epochs, capped to what fits there;
- then the final trial retrains the best config so far with what is left (less the measured
  set-up outside a run's budget clock, ``RESULTS_SECONDS`` and ``MARGIN``) as its run's
  ``--budget``: about half the study, twice the default run's time. A budgeted run plans its epochs and its LR schedule to
  end within it. Regressions: the study used to stop when no trial of the searched minimum
  epochs fitted, and a 10m study on the demo data used 83 % of its budget (2 trials, 8m17s);
  and the last trial, a new sampled config given the rest, could not make the best config
  better, so a 10m study on the demo data ended with the default run as its best.

Example:
    >>> budget = StudyBudget(600.0, now=iter([0.0, 100.0, 100.0]).__next__)
    >>> budget.record(wall_s=100.0, epoch_seconds=[20.0] * 4)  # 20 s of build and evaluation
    >>> budget.next_slot(3, 10)  # 500 s left, 300 kept for the final trial: 20 + 20 * e <= 200
    Slot(epochs=9, seconds=None, final=False)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

__all__ = [
    "StudyBudget",
    "Slot",
    "DEFAULT_SHARE",
    "FINAL_SHARE",
    "MARGIN",
    "wall_seconds",
    "clock_text",
]

DEFAULT_SHARE = 0.25  # of the study's seconds: the default trial's budget
FINAL_SHARE = 0.5  # of the study's seconds, kept for the final trial (the best config, retrained)
MIN_RUN_S = 1.0  # the least run budget a default trial is given (a quarter of a 4 s study)
MARGIN = 0.01  # of a budgeted trial's seconds, kept back: a budgeted run may end a little late
# seconds kept back by the final trial for the study's own files after it: trials.csv, best.yaml
# and the two Optuna plots took 2.5 s on 2 cores (matplotlib's import included), 8 % of a 30 s
# study, which ended at 113 % without it
RESULTS_SECONDS = 3.0


@dataclass(frozen=True)
class Slot:
    """What the next trial may spend: at most ``epochs`` epochs (the searched epochs capped), or
    a run budgeted to ``seconds`` (its epochs planned by the run). Neither: as configured.
    ``final``: the study's last trial, which retrains the best config so far."""

    epochs: Optional[int] = None
    seconds: Optional[float] = None
    final: bool = False


class StudyBudget:
    """Seconds for a whole study (None: no limit) and the costs of the trials run so far;
    ``spent``: the seconds earlier sessions of the study used (``history.spent_seconds``),
    which a resumed session counts as its own."""

    def __init__(
        self,
        seconds: Optional[float],
        *,
        now: Callable[[], float] = time.monotonic,
        spent: float = 0.0,
    ):
        self.seconds, self.now, self.spent = seconds, now, spent
        self.start = now()
        self.stopped: Optional[float] = None  # the clock's reading at stop()
        self.overheads: list[float] = []  # seconds of each trial outside its epochs
        self.epoch_s: list[float] = []  # seconds per epoch of each trial
        self.setups: list[float] = []  # seconds of each finished trial outside its training

    def elapsed(self) -> float:
        return self.spent + (self.now() if self.stopped is None else self.stopped) - self.start

    def stop(self, *, counted: bool = True) -> None:
        """Stop the clock: the study's time is told from here on (its files, its report).
        ``counted`` False: the session ran no trial and adds nothing, as ``spent_seconds``
        stores it. Regression: a rerun of a finished study said 38s of 40s where it had 37s."""
        if self.stopped is None:
            self.stopped = self.now() if counted else self.start

    def remaining(self) -> float:
        return math.inf if self.seconds is None else self.seconds - self.elapsed()

    def record(
        self, *, wall_s: float, epoch_seconds: Sequence[float], train_s: Optional[float] = None
    ) -> None:
        """A finished (or pruned) trial's wall time and its epochs' times; ``train_s``, the
        run's training seconds (``metrics.train_seconds``), when it finished."""
        if epoch_seconds:
            self.epoch_s.append(sum(epoch_seconds) / len(epoch_seconds))
            self.overheads.append(max(0.0, wall_s - sum(epoch_seconds)))
        if train_s is not None:
            self.setups.append(max(0.0, wall_s - train_s))

    def setup(self) -> float:
        """Seconds a trial spends outside its run's budget clock (scan, model build, final
        evaluation, files); the mean overhead when no trial finished yet (the safe side)."""
        seen = self.setups or self.overheads
        return sum(seen) / len(seen) if seen else 0.0

    def first_slot(self, trials: Optional[int]) -> Optional[Slot]:
        """The default trial's share: ``DEFAULT_SHARE`` of the budget as its run's budget (all of
        it for a one-trial study, half for two; never more than what is left, None when that is
        under ``MIN_RUN_S``); as configured without a budget."""
        if self.seconds is None:
            return Slot()
        share = {1: 1.0, 2: 0.5}.get(trials or 0, DEFAULT_SHARE)
        seconds = min(self.seconds * share, self.remaining() * (1 - MARGIN))
        # a resumed study may have less left. Regression: "train.budget: '-1.5s' is not a
        # duration" when its default trial was to run again with the budget spent
        return Slot(seconds=seconds) if seconds >= MIN_RUN_S else None

    def next_slot(
        self, low: int, high: int, *, last: bool = False, retrain: bool = True
    ) -> Optional[Slot]:
        """The next trial's share (module docstring): a searched trial's capped epochs, or the
        last trial's seconds (``last``: the study's trial limit makes this one the last), which
        is the final trial when ``retrain`` (else a searched config given the rest); None when
        not even one epoch and a trial's overhead fit: the study stops starting trials."""
        remaining = self.remaining()
        if remaining <= 0:
            return None
        if self.seconds is None:  # --trials alone: its last trial is the final one, as configured
            return Slot(final=True) if last and retrain else Slot(epochs=high)
        if not self.epoch_s:
            return Slot(epochs=high)
        searchable = remaining - self.reserve(retrain)
        if not last and searchable >= self.estimate(low):
            fits = [e for e in range(low, high + 1) if self.estimate(e) <= searchable]
            return Slot(epochs=max(fits))
        slot = self.final_slot()
        return None if slot is None else Slot(seconds=slot.seconds, final=retrain)

    def final_slot(self) -> Optional[Slot]:
        """The final trial's share: what is left, less the measured set-up, the study's files
        and ``MARGIN``; None when not even one epoch fits. Without a budget: as configured."""
        if self.seconds is None:
            return Slot(final=True)
        remaining = self.remaining()
        seconds = (remaining - self.setup() - RESULTS_SECONDS) * (1 - MARGIN)
        fits = remaining >= (self.estimate(1) or 0.0) and seconds > 0
        return Slot(seconds=seconds, final=True) if fits else None

    def reserve(self, retrain: bool = True) -> float:
        """Seconds a searched trial must leave for the final trial (none without a budget, or
        when the study ends without one)."""
        return self.seconds * FINAL_SHARE if self.seconds is not None and retrain else 0.0

    def estimate(self, epochs: int) -> Optional[float]:
        """Seconds a trial of ``epochs`` epochs should take; None before any trial ran."""
        if not self.epoch_s:
            return None
        return sum(self.overheads) / len(self.overheads) + max(self.epoch_s) * epochs

    def room_for_epoch(self, epoch_seconds: Sequence[float], reserve: float = 0.0) -> bool:
        """Inside a trial: whether one more epoch like the ones so far, and the trial's final
        evaluation, still end within the budget, less ``reserve`` seconds (a searched trial
        leaves the final trial's share: one slower than its estimate, or the first trial of a
        resumed study, which has no estimate, is stopped before it)."""
        if self.seconds is None or not epoch_seconds:
            return True
        rest = sum(self.overheads) / len(self.overheads) if self.overheads else 0.0
        return self.remaining() - reserve >= sum(epoch_seconds) / len(epoch_seconds) + rest

    def usage(self) -> str:
        """``9m 41s of 10m (97 %)``, or the elapsed time alone without a budget."""
        used = clock_text(self.elapsed())
        if self.seconds is None:
            return used
        return f"{used} of {clock_text(self.seconds)} ({100 * self.elapsed() / self.seconds:.0f} %)"


def wall_seconds(spans: Sequence[tuple[float, float]]) -> float:
    """Seconds covered by the ``(start, end)`` spans, overlaps counted once: the wall time of a
    study's sessions and trials, one after another or side by side (workers).

    Example:
        >>> wall_seconds([(0, 10), (5, 20), (30, 35)])
        25.0
    """
    total, reached = 0.0, -math.inf
    for start, end in sorted(spans):
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total


def clock_text(seconds: float) -> str:
    """``1h 05m``, ``9m 41s``, ``41s``."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s" if m else f"{s}s"
