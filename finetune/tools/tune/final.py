"""What a study's final trial adds to the run it retrains, before it is run.

A final trial retrains the best config so far (``history.to_retrain``): on the training and
validation images (``refit``), taught by that config's run (``teach``), and under a budget for
about twice the default run's time. Without a budget it trains for the epochs its parent
trained, so without the refit and the teacher it would repeat its parent's run (same config,
epochs and seed); and an earlier final trial of the same config has already done what it would
do. ``repeats`` says so, and the study then runs a searched trial instead (or, when every field
is fixed, none). Regressions (a hostile pass over 76c44b5): a finished ``--trials 3`` study
resumed with ``--trials 4`` retrained the same config again, with the same losses; a
``--no-refit`` study of a mixing config (not taught) ran a copy of its parent.

Example:
    >>> why = repeats(study, base, budget, refit=True, teach=True)  # doctest: +SKIP
    >>> why  # doctest: +SKIP
    "trial 2 already retrained trial 0's config"
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ...config import FinetuneConfig
from .history import to_retrain
from .results import FINAL_ATTR

__all__ = ["repeats", "untaught"]


def untaught(base: FinetuneConfig, parent, run: dict) -> Optional[str]:
    """Why the final trial retraining ``parent`` with ``run``'s values cannot learn from it:
    its config mixes images (soft targets cannot be mixed), or that run is not on this
    machine's disk (another worker's); None: it can."""
    train = FinetuneConfig.resolve(base=base, **run).train
    run_dir = parent.user_attrs.get("run_dir")
    if train.mixup or train.cutmix:
        return "its config mixes images"
    if not run_dir or not (Path(run_dir) / "config.json").is_file():
        return f"{run_dir} is not on this machine"
    return None


def repeats(study, base: FinetuneConfig, budget, refit: bool, teach: bool) -> Optional[str]:
    """Why an unbudgeted final trial would add nothing, or None: an earlier final trial of the
    same config completed, or it would be neither refitted nor taught. A budgeted one trains
    longer than its parent (``history.short_refit`` judges a resumed one)."""
    parent = to_retrain(study)
    if budget.seconds is not None or parent is None:  # nothing completed: the final samples
        return None
    done = [t.number for t in study.trials
            if t.state.name == "COMPLETE" and t.user_attrs.get(FINAL_ATTR) == parent.number]  # fmt: skip
    if done:
        return f"trial {done[-1]} already retrained trial {parent.number}'s config"
    if not refit and (not teach or untaught(base, parent, dict(parent.params))):
        return f"it would repeat trial {parent.number}'s run (no refit, no teacher)"
    return None
