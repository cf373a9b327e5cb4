"""What a study's storage says, read by every worker before its next trial: the trials waiting
to be asked for, the ones that count towards ``--trials``, the config the final trial retrains
and the trial whose weights it continues from, and the costs of finished trials.

Example:
    >>> best = best_free(study)  # doctest: +SKIP
    >>> to_retrain(study).number == config_of(best)  # doctest: +SKIP
    True
"""

from __future__ import annotations

from .budget import StudyBudget
from .results import FINAL_ATTR

__all__ = ["waiting", "to_retrain", "best_free", "config_of", "prime", "counted"]


def waiting(study) -> list[dict]:
    """The user attributes of the study's enqueued trials that no worker has asked for yet."""
    return [t.user_attrs for t in study.trials if t.state.name == "WAITING"]


def to_retrain(study):
    """The trial whose config the final trial retrains (``best_free``'s config: a final
    trial's is its parent's); None when no trial completed (the final trial then samples)."""
    best = best_free(study)
    return None if best is None else study.trials[config_of(best)]


def best_free(study):
    """The best complete trial whose config no other worker's final trial is retraining now
    (several workers on one storage each end with a final trial: the second retrains the
    next-best config, not the same one twice), the best when all are; None when none
    completed."""
    done = [t for t in study.trials if t.state.name == "COMPLETE" and t.values]
    if not done:
        return None
    running = [t for t in study.trials if t.state.name == "RUNNING"]
    busy = {t.user_attrs[FINAL_ATTR] for t in running if FINAL_ATTR in t.user_attrs}
    free = [t for t in done if config_of(t) not in busy]
    sign = -1 if study.direction.name == "MAXIMIZE" else 1
    return min(free or done, key=lambda t: (sign * t.value, t.number))


def config_of(trial) -> int:
    """The number of the trial whose config ``trial`` trained: a final trial's parent."""
    return trial.user_attrs.get(FINAL_ATTR, trial.number)


def prime(study, budget: StudyBudget) -> None:
    """Give the budget the costs of the storage's finished trials (an earlier session's, other
    workers'), so a resumed session's first searched trial is capped like later ones.
    Regression: it had no estimate, so its epochs were not capped to what fit."""
    for t in study.trials:
        attrs = t.user_attrs
        if t.state.name in ("COMPLETE", "PRUNED") and attrs.get("epoch_seconds"):
            budget.record(wall_s=attrs["seconds"], epoch_seconds=attrs["epoch_seconds"],
                          train_s=attrs.get("train_s"))  # fmt: skip


def counted(study) -> int:
    """The study's trials that count towards ``trials``: finished, pruned, and running (another
    worker's), not failed ones (a failure is retried)."""
    return sum(t.state.name in ("COMPLETE", "PRUNED", "RUNNING") for t in study.trials)
