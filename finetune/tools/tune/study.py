"""``finetune tune``: an Optuna study over a search space within a wall-clock budget, each trial
one ``adapt`` run in ``OUTPUT/trials/trial-NNNN``.

- Fields given by the caller are fixed; the space searches the rest (``space.py``).
- Each epoch's validation score is reported to Optuna; the pruner (median or successive
  halving) stops a trial that is worse than earlier ones at the same epoch.
- The first trial is the default run: the base config, nothing sampled (``trial.py``).
- The budget covers the whole study: the default trial gets a third of it as its run's budget, a
  searched trial starts only if one of its length can finish (the searched ``epochs`` are capped
  to what fits) and is stopped when its next epoch would not, and the last trial gets what is
  left as its run's budget (``budget.py``).
- Trials share the scan (cached on disk per folder) and, unless ``cache_images`` is given, the
  decoded-image disk cache: only the first trial decodes the images.
- ``storage`` (``sqlite:///study.db`` or any Optuna RDB URL) keeps the study: the same command
  resumes it, and several processes on one storage search together (one trial per process at a
  time; ``trials`` counts the study's trials, all workers').

Example:
    >>> report = tune("resnet50", "photos", budget="30m")  # doctest: +SKIP
    >>> report.best_run_dir, report.best_value  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ...errors import ConfigError
from ...events import emit
from ...validation import parse_duration
from .budget import StudyBudget
from .results import TrialRow, trial_rows
from .space import SearchSpace, load_search_space
from .trial import DEFAULT_ATTR, TrialRunner, optuna_module
from .view import tune_reporting

__all__ = ["tune", "TuneReport"]

PRUNERS = ("median", "halving", "none")


@dataclass(frozen=True)
class TuneReport:
    """What ``tune`` returns; ``best_run_dir`` is the result (a run directory like any other)."""

    study_name: str
    output: Path
    score_name: str
    best_run_dir: Optional[Path]
    best_value: Optional[float]
    best_params: dict[str, Any]
    trials: tuple[TrialRow, ...]
    budget_s: Optional[float]
    elapsed_s: float
    usage: str  # "9m 41s of 10m (97 %)"
    stop_reason: str
    files: tuple[Path, ...]


def tune(
    model: Optional[str] = None,
    dataset: Optional[str | os.PathLike] = None,
    *,
    budget: Optional[str | float] = None,
    trials: Optional[int] = None,
    search: Optional[str | os.PathLike | Mapping] = None,
    storage: Optional[str] = None,
    study: Optional[str] = None,
    output: Optional[str | os.PathLike] = None,
    pruner: str = "median",
    recipe: Optional[str] = None,
    verbose: bool = True,
    clock: Callable[[], float] = time.monotonic,
    **overrides: Any,
) -> TuneReport:
    """Search a config for ``model`` on ``dataset`` within ``budget``; every trial is a run.

    Args:
        model, dataset, recipe, overrides: as for ``adapt``; overrides are fixed, not searched.
        budget: the whole study's wall-clock time ("30m", "2h", or seconds).
        trials: stop after this many trials of the study (all workers, earlier sessions too).
            At least one of ``budget`` and ``trials`` is needed.
        search: search-space YAML file, a name in ``recipes/search``, or a mapping; default
            ``recipes/search/default.yaml``.
        storage: Optuna storage URL (``sqlite:///study.db``): persists, resumes, shares.
        study: the study's name (default ``<data folder>-<backbone>``).
        output: the study's folder (default ``runs/tune-<study>``): ``trials/`` and ``study/``.
        pruner: median, halving (successive halving) or none.
        clock: a monotonic clock in seconds (tests give a fake one).

    Returns:
        TuneReport: the best run directory and score, every trial, the budget used.

    Example:
        >>> r = tune("test_resnet", "tiny", trials=3, pretrained=False, img_size=32)  # doctest: +SKIP
    """
    with tune_reporting(verbose):
        optuna = optuna_module()
        runner = TrialRunner.prepare(
            model, dataset, recipe=recipe, search=_space(search), overrides=overrides,
            study=study, output=output,
        )  # fmt: skip
        seconds = None if budget is None else parse_duration(budget, "--budget")
        if seconds is None and trials is None:
            raise ConfigError("tune needs --budget (e.g. 30m) or --trials N (or both)")
        if trials is not None and trials < 1:
            raise ConfigError(f"--trials {trials}: must be at least 1")
        if pruner not in PRUNERS:
            raise ConfigError(f"--pruner {pruner}: not one of {', '.join(PRUNERS)}")
        opt_study = _study(optuna, runner, storage, pruner, budgeted=seconds is not None)
        clock_budget = StudyBudget(seconds, now=clock)
        emit("info", runner.describe(storage, clock_budget), tune=True)
        reason = runner.search(opt_study, clock_budget, trials)
        return _finish(opt_study, runner, clock_budget, reason)


def _space(search) -> SearchSpace:
    return load_search_space(search)


def _study(optuna, runner: TrialRunner, storage: Optional[str], pruner: str, *, budgeted: bool):
    """The Optuna study: created, or loaded from ``storage`` to resume or join it."""
    if storage is None and runner.has_trials():
        raise FileExistsError(
            f"{runner.output} already holds trials of a study; pass --storage to keep a study "
            "across runs, or choose another --output"
        )
    if storage is not None and storage.startswith("sqlite:"):  # several workers: wait on locks
        storage = _sqlite_storage(optuna, storage)
    seed = None if storage is not None else runner.base.train.seed  # workers must differ
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
        "none": lambda: optuna.pruners.NopPruner(),
    }
    study = optuna.create_study(
        study_name=runner.study_name,
        storage=storage,
        direction="maximize",
        sampler=sampler,
        pruner=pruners[pruner](),
        load_if_exists=True,
    )
    if not study.trials:  # the first trial is the default run (trial.py), nothing sampled
        study.enqueue_trial(runner.default_params(budgeted), user_attrs={DEFAULT_ATTR: True},
                            skip_if_exists=True)  # fmt: skip
    return study


def _sqlite_storage(optuna, url: str):
    """An sqlite storage that waits on other workers' locks. Regression: two workers starting
    together on a new file both created its tables, and one failed with "table studies already
    exists" (or a duplicate alembic_version row); the loser retries and finds them made."""
    import sqlalchemy.exc

    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))


def _finish(study, runner: TrialRunner, budget: StudyBudget, reason: str) -> TuneReport:
    files = runner.write_results(study, budget, reason)
    rows = tuple(trial_rows(study))
    best = next((r for r in rows if r.best), None)
    report = TuneReport(
        study_name=runner.study_name,
        output=runner.output,
        score_name=runner.score_name or "val_accuracy",
        best_run_dir=Path(best.run_dir) if best and best.run_dir else None,
        best_value=best.value if best else None,
        best_params=dict(best.params) if best else {},
        trials=rows,
        budget_s=budget.seconds,
        elapsed_s=budget.elapsed(),
        usage=budget.usage(),
        stop_reason=reason,
        files=tuple(files),
    )
    emit("info", f"study {runner.study_name}: {len(rows)} trials, {reason}; {budget.usage()}",
         tune=True)  # fmt: skip
    return report
