"""The per-epoch reporter of a trial's run: it reports each epoch's validation score to Optuna,
prunes on the pruner's word and ends a trial the study's budget has no room for; ``import
optuna`` with one error naming the extra, and its experimental-API warnings silenced.

Example:
    >>> reporter = TrialReporter(trial, epochs=5, budget=budget)  # doctest: +SKIP
    >>> adapt(model, data, callbacks=[reporter])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import Optional

from .budget import StudyBudget
from .interrupt import raise_if_interrupted, set_up_done

__all__ = ["TrialReporter", "optuna_module", "quiet_experimental", "ALIVE_ATTR"]

# trial attribute: when the trial last logged an epoch, epoch seconds (a killed worker's trial
# counts up to it in history.spent_seconds)
ALIVE_ATTR = "alive_at"


def optuna_module():
    """``import optuna`` (quiet), or one error naming the extra to install."""
    try:
        import optuna
    except ImportError:
        raise ValueError("finetune tune needs optuna: pip install 'finetune[tune]'") from None
    # the study reports through events, failed trials included (optimize warns of them too)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


@contextlib.contextmanager
def quiet_experimental():
    """Optuna's heartbeat API (``fail_stale_trials``, the storage's heartbeat and its retry
    callback; experimental since Optuna 2.8-2.9) warns on every use; a user can do nothing
    about it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna_module().exceptions.ExperimentalWarning)
        yield


class TrialReporter:
    """A run's extra logger (``adapt(callbacks=)``): reports each epoch's validation score to
    the trial, prunes it (raises) when the pruner says so, and ends the run after this epoch
    (``halt``) when the budget has no room for another."""

    def __init__(self, trial, *, epochs: Optional[int], budget: StudyBudget, prune: bool = True,
                 reserve: float = 0.0):  # fmt: skip
        # epochs None: a budgeted run that plans its own length and ends within its budget;
        # reserve: seconds of the study's budget the trial must leave (the final trial's share)
        self.trial, self.epochs, self.budget, self.prune = trial, epochs, budget, prune
        self.reserve = reserve
        self.epoch_seconds: list[float] = []
        self.score_name: Optional[str] = None
        self.note = ""
        self.halt: Optional[str] = None  # set: the trainer ends the run after this epoch
        self.halted_after = 0  # the epoch it ended after (from 1)
        self.train_s: Optional[float] = None  # the finished run's metrics.train_seconds
        # a final refit trains on the validation images and reports nothing: its score is its
        # config's validation score, this
        self.refit_score: Optional[float] = None

    def log_epochs(self, records) -> None:
        set_up_done()
        raise_if_interrupted()  # a Ctrl-C in the set-up that a finalizer swallowed
        self.trial.set_user_attr(ALIVE_ATTR, round(time.time(), 3))
        record = records[-1]
        self.epoch_seconds.append(float(record.get("epoch_seconds") or 0.0))
        self.score_name = "val_map" if "val_map" in record else "val_accuracy"
        score, epoch = record.get(self.score_name), record["epoch"]
        if score is None and self.refit_score is not None:
            return
        if score is None:
            raise ValueError("tune needs validation images: a val/ folder or --val-split > 0")
        self.trial.report(float(score), epoch)
        # the final trial is not pruned: a longer schedule is behind shorter ones at epoch k
        if self.prune and self.trial.should_prune():
            self._stop(f"pruned after epoch {epoch} ({self.score_name} {score:.4f})")
        planned = self.epochs is not None and epoch < self.epochs
        if planned and not self.budget.room_for_epoch(self.epoch_seconds, self.reserve):
            # the run ends here as if on time (the trainer reads ``halt``): the trial completes
            # with its best score so far and can be the one the final trial retrains.
            # Regression: it was pruned, so a trial ahead of the default run when the budget
            # stopped it could not be chosen (elpv seed 13: 0.873 against 0.860 after 4 epochs)
            self.halt, self.halted_after = "the budget had no room for another", epoch
            self._add_note(self.stopped())

    def _stop(self, why: str) -> None:
        """Stop the trial, its note saying why after what it was (``near trial 0's config``).
        Regression: the reason replaced the note, so a pruned neighbour did not say it was one."""
        import optuna

        self._add_note(why)
        raise optuna.TrialPruned(self.note)

    def stopped(self) -> str:
        """``stopped after epoch 4: the budget had no room for another`` (the trial's note),
        or "" when the run was not ended early."""
        return f"stopped after epoch {self.halted_after}: {self.halt}" if self.halt else ""

    def _add_note(self, why: str) -> None:
        self.note = "; ".join(filter(None, (self.note, why)))

    def close(self) -> None:
        pass
