"""``finetune tune``: an Optuna study over a search space within a wall-clock budget, each trial
one ``adapt`` run in ``OUTPUT/trials/trial-NNNN``.

- Fields given by the caller are fixed; the space searches the rest (``space.py``).
- Each epoch's validation score is reported to Optuna; the pruner (median or successive
  halving) stops a trial that is worse than earlier ones at the same epoch.
- The first trial is the default run: the base config, nothing sampled (``trial.py``). The
  next ones, until TPE has its ``STARTUP_TRIALS``, are neighbours of the best config so far
  (``neighbour.py``), not random points of the whole space.
- The budget covers the whole study: the default trial gets a quarter of it as its run's
  budget, a searched trial starts only if one of its length can finish before the final half
  (the searched ``epochs`` are capped to what fits) and ends, complete with its best score so
  far, when its next epoch would not, and the final trial retrains the best config with what
  is left (``budget.py``), on the training and validation images (``refit``, as sklearn's
  search refits on all its data): the study has chosen the config, and a fifth more images
  measured +0.55 test points on average (docs/benchmarks.md). Its score is the config's
  validation score; it has none of its own. It is also taught (``teach``): the trial whose
  config it retrains scores its training images, and those probabilities are mixed into its
  targets (``train.teacher``).
- Trials share the scan (cached on disk per folder) and, unless ``cache_images`` is given, the
  decoded-image disk cache: only the first trial decodes the images.
- ``storage`` (``sqlite:///study.db`` or any Optuna RDB URL) keeps the study: the same command
  resumes it with what its earlier sessions left of the budget (``history.spent_seconds``)
  and, once a final trial under a budget has completed, says it is finished and runs nothing
  (under ``trials`` alone it stops at that count); several
  processes on one storage search together (one trial per process at a time, taken from a
  sqlite file under a lock beside it; ``trials`` counts the study's trials, all workers');
  heartbeats let a live worker fail and retry a dead one's trial.

Example:
    >>> report = tune("resnet50", "photos", budget="30m")  # doctest: +SKIP
    >>> report.best_run_dir, report.best_value  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ...errors import ConfigError, first_line
from ...events import emit
from ...validation import parse_duration
from .budget import StudyBudget
from .history import RUN_ATTRS, WORKER_ATTR, fail_stale, spent_seconds, worker_id
from .interrupt import raise_if_interrupted, stop_on_interrupt
from .neighbour import STARTUP_TRIALS
from .results import TrialRow, trial_rows
from .space import SearchSpace, load_search_space
from .trial import DEFAULT_ATTR, FINAL_ATTR, TrialRunner, optuna_module, quiet_experimental
from .view import tune_reporting

try:  # file locks for sqlite storages (POSIX); elsewhere workers share a sqlite file unguarded
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["tune", "TuneReport"]

PRUNERS = ("median", "halving", "none")
MIN_BUDGET_S = 4.0  # a quarter of it, the default trial's, is then a second at least
# a running trial records a heartbeat every HEARTBEAT_S seconds (a thread of its process); one
# silent for GRACE_S is failed by the next worker that starts a trial, and retried at most
# MAX_RETRIES times (Optuna's recommended 60 s / 120 s, with room for a loaded machine)
HEARTBEAT_S = 60
GRACE_S = 180
MAX_RETRIES = 2


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
    refit: bool = True,
    teach: bool = True,
    recipe: Optional[str] = None,
    verbose: bool = True,
    clock: Callable[[], float] = time.monotonic,
    **overrides: Any,
) -> TuneReport:
    """Search a config for ``model`` on ``dataset`` within ``budget``; every trial is a run.

    Args:
        model, dataset, recipe, overrides: as for ``adapt``; overrides are fixed, not searched.
        budget: the whole study's wall-clock time ("30m", "2h", or seconds); a resumed study
            has what its earlier sessions left, and one whose final trial completed runs
            nothing unless this is larger than the budget it finished under.
        trials: stop after this many trials of the study (all workers, earlier sessions too);
            from 3 on, the last is the final trial (without ``budget``: trained for the epochs
            of the trial it retrains). At least one of ``budget`` and ``trials`` is needed.
        search: search-space YAML file, a name in ``recipes/search``, or a mapping; default
            ``recipes/search/default.yaml``.
        storage: Optuna storage URL (``sqlite:///study.db``): persists, resumes, shares.
        study: the study's name (default ``<data folder>-<backbone>``).
        output: the study's folder (default ``runs/tune-<study>``): ``trials/`` and ``study/``.
        pruner: median, halving (successive halving) or none.
        refit: the final trial retrains the best config on the training and validation images
            (sklearn's ``refit``); its score is then that config's validation score.
        teach: the final trial also learns from the trial whose config it retrains: that
            run's probabilities on the training images are mixed into its targets
            (``train.teacher``, knowledge distillation).
        clock: a monotonic clock in seconds (tests give a fake one).

    Returns:
        TuneReport: the best run directory and score, every trial, the budget used.

    Example:
        >>> r = tune("test_resnet", "tiny", trials=3, pretrained=False, img_size=32)  # doctest: +SKIP
    """
    with tune_reporting(verbose):
        optuna = optuna_module()
        seconds = None if budget is None else parse_duration(budget, "--budget")
        if (
            seconds is not None and seconds < MIN_BUDGET_S
        ):  # regression: "'-0.0s' is not a duration"
            raise ConfigError(f"--budget {budget}: a study needs at least {MIN_BUDGET_S:.0f}s "
                              "(its default trial gets a quarter)")  # fmt: skip
        if seconds is None and trials is None:
            raise ConfigError("tune needs --budget (e.g. 30m) or --trials N (or both)")
        if trials is not None and trials < 1:
            raise ConfigError(f"--trials {trials}: must be at least 1")
        if pruner not in PRUNERS:
            raise ConfigError(f"--pruner {pruner}: not one of {', '.join(PRUNERS)}")
        runner = TrialRunner.prepare(
            model, dataset, recipe=recipe, search=_space(search), overrides=overrides,
            study=study, output=output, refit=refit, teach=teach,
        )  # fmt: skip
        opt_study = _study(optuna, runner, storage, pruner, budgeted=seconds is not None)
        # a resumed study's budget is what its earlier sessions left. Regression: each
        # session had the whole budget, so resuming after Ctrl-C at 25m of 30m ran 30m more
        clock_budget = StudyBudget(seconds, now=clock, spent=spent_seconds(opt_study))
        emit("info", runner.describe(storage, clock_budget), tune=True)
        try:
            with stop_on_interrupt():  # the files too: a Ctrl-C there left no line at all
                reason = runner.search(opt_study, clock_budget, trials)
                return _finish(opt_study, runner, clock_budget, reason)
        except (KeyboardInterrupt, Exception) as e:
            if isinstance(e, Exception) and type(e).__name__ != "Interrupted":
                raise
            raise _interrupted(opt_study, runner, clock_budget, storage) from None


def _interrupted(study, runner: TrialRunner, budget: StudyBudget, storage: Optional[str]):
    """``Interrupted`` (exit 130) saying how the study goes on, its files written so far.
    Regression: Ctrl-C in a trial said "continue with finetune run --resume <the trial>",
    which would finish one trial's run, not the study."""
    from ...api import Interrupted

    # the files are a courtesy, the message is the point. Regression: a second Ctrl-C while
    # they were written ended the study with "interrupted (Ctrl-C)" alone
    with contextlib.suppress(Exception, KeyboardInterrupt):
        runner.write_results(study, budget, "interrupted (Ctrl-C)")
    folders = [runner.output / "study", runner.output / "trials"]
    where = " and ".join(str(f) for f in folders if f.is_dir()) or "no files written"
    if storage:
        return Interrupted(f"study {runner.study_name} interrupted; its trials are kept in "
                           f"{storage} ({where}): run the same finetune tune command to resume it")  # fmt: skip
    return Interrupted(f"study {runner.study_name} interrupted; it was in memory and cannot "
                       f"resume (its trials so far: {where}); to keep the next study across runs, "
                       "pass --storage sqlite:///study.db and another --output")  # fmt: skip


def _space(search) -> SearchSpace:
    return load_search_space(search)


def _study(optuna, runner: TrialRunner, storage: Optional[str], pruner: str, *, budgeted: bool):
    """The Optuna study: created, or loaded from ``storage`` to resume or join it."""
    if storage is None and runner.has_trials():
        raise FileExistsError(
            f"{runner.output} already holds trials of a study; pass --storage to keep a study "
            "across runs, or choose another --output"
        )
    url = storage
    with _storage_errors(optuna, url):
        if storage is not None:
            storage = _rdb_storage(optuna, storage)
        seed = None if storage is not None else runner.base.train.seed  # workers must differ
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS)
        study = optuna.create_study(
            study_name=runner.study_name,
            storage=storage,
            direction="maximize",
            sampler=sampler,
            pruner=_pruner(optuna, pruner),
            load_if_exists=True,
        )
        _check_same_choices(study, runner.space, url)
    # an output folder of another study. Regression: its trial folders failed the new trials
    # one by one (each run refused its folder), then its study/ files were replaced
    if not study.trials and runner.has_trials():
        raise ConfigError(
            f"{runner.output} holds the trials of another study (study {runner.study_name} in "
            f"{url} has none); choose another --output, or give the --storage and --study that "
            "study was made with"
        )
    # the first trial is the default run (trial.py), nothing sampled; again when it failed
    # (interrupted, its worker gone). Regression: a study resumed after Ctrl-C in its default
    # trial never ran one, so nothing compared the search with the config it replaces
    alive = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")
    with _sqlite_lock(url):  # workers starting together enqueue one default trial, not two
        fail_stale(study)  # a dead default trial's retry is queued under the lock, or seen
        if not any(t.user_attrs.get(DEFAULT_ATTR) and t.state.name in alive
                   for t in study.get_trials(deepcopy=False)):  # fmt: skip
            study.enqueue_trial(runner.default_params(budgeted), user_attrs={DEFAULT_ATTR: True},
                                skip_if_exists=not study.trials)  # fmt: skip
    study.ask = _asking(study.ask, url)
    return study


@contextlib.contextmanager
def _sqlite_lock(url: Optional[str]):
    """An exclusive lock on ``<db>.lock`` beside a sqlite storage (nothing for other storages:
    their rows lock): sqlite has no row locks, and Optuna's pop of a waiting trial reads it
    WAITING and then marks it RUNNING, so two workers asking at once could both take it.
    Regression: the two-worker test's workers both ran trial 0, one failed on the other's run
    folder lock, and both exited 2."""
    if not (url and url.startswith("sqlite:///")) or fcntl is None:
        yield
        return
    with open(f"{url[10:]}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _asking(ask, url: Optional[str]):
    """``study.ask``, which ``study.optimize`` calls for each trial, as a worker asks: not once
    Ctrl-C was pressed (regression: a Ctrl-C between trials created the next trial and failed
    it, unrun), one worker at a time on a sqlite file (``_sqlite_lock``), and the new trial
    named after its worker at once (``history.fail_stale``; regression: a worker killed just
    after its ask left a trial that no one could tell was dead for 3 minutes, counted in the
    budget up to now, and a final trial of the best config looked alive to the rerun)."""

    def asked(*args, **kwargs):
        raise_if_interrupted()
        with _sqlite_lock(url):
            trial = ask(*args, **kwargs)
            trial.set_user_attr(WORKER_ATTR, worker_id())
        return trial

    return asked


@contextlib.contextmanager
def _storage_errors(optuna, url: Optional[str]):
    """A storage that cannot be opened (a bad URL, a missing folder, a file that is not a
    database, another program's database) as one line naming ``--storage``. Regression: each
    went down the unexpected-failure path with SQLAlchemy's or Optuna's message alone."""
    import sqlalchemy.exc

    if url is not None and url.rstrip("/") in ("sqlite:", "sqlite:/"):  # sqlite:// is in memory
        raise ConfigError(f"--storage {url} names no file; give sqlite:///study.db, or leave out "
                          "--storage for a study in memory")  # fmt: skip
    if url and url.startswith("sqlite:///") and not Path(url[10:]).parent.is_dir():
        raise ConfigError(f"--storage {url}: {Path(url[10:]).parent} is not a folder; "
                          "create it, or point at sqlite:///study.db here")  # fmt: skip
    try:
        yield
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError,
            RuntimeError) as e:  # RuntimeError: another program's alembic version  # fmt: skip
        raise ConfigError(f"--storage {url}: {first_line(e, 200)}; use sqlite:///study.db (a file "
                          "of its own) or another database URL SQLAlchemy knows") from None  # fmt: skip


def _check_same_choices(study, space: SearchSpace, url: Optional[str]) -> None:
    """A resumed study's keys must be searched as its trials were: the same choices, a range of
    the same type (Optuna changes neither). Regression: trials failed one by one with Optuna's
    "CategoricalDistribution does not support dynamic value space" (or "different distribution
    kind"), naming neither the key nor a fix."""
    kinds = {"choice": "CategoricalDistribution", "int": "IntDistribution",
             "float": "FloatDistribution"}  # fmt: skip
    for t in study.trials:
        for key, dist in t.distributions.items():
            p = space.get(key)
            old = getattr(dist, "choices", None)
            same_kind = p is not None and type(dist).__name__ == kinds[p.kind]
            if p is None or same_kind and (old is None or tuple(old) == p.choices):
                continue
            was = f"the choices {list(old)}" if old is not None else f"a {type(dist).__name__}"
            raise ConfigError(f"--search: {key} is not searched as study {study.study_name} in "
                              f"{url} was ({was}); search it the same way, or start another "
                              "--study")  # fmt: skip


def _pruner(optuna, name: str):
    """``--pruner``'s Optuna pruner. The median pruner waits for 3 trials and judges a trial
    from its second epoch on (epochs count from 1; Optuna prunes from step ``n_warmup_steps``):
    a first epoch's score is mostly warmup and a new head. Regression: ``n_warmup_steps=1``
    judged epoch 1, against docs/tuning.md, and pruned a one-epoch trial of the two-worker
    test now and then (3 complete trials of 4)."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def _rdb_storage(optuna, url: str):
    """The RDB storage at ``url`` with heartbeats: a trial whose process died (killed, the
    machine lost) is failed by the next worker once ``GRACE_S`` passed without one and, if it
    was the default run or a final trial, tried again (``_retry_own``; the retry waits in the
    storage with its user attributes, so it keeps its role). Regression: a dead worker's trial
    stayed RUNNING for good and counted towards ``--trials``. On sqlite it also waits on other
    workers' locks. Regression: two workers starting together on a new file both created its
    tables, and one failed with "table studies already exists" (or a duplicate alembic_version
    row); the loser retries and finds them made."""
    import sqlalchemy.exc

    # newer Optuna names the stale-trial callback apart from the (deprecated) failed-trial one
    new = hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
    with quiet_experimental():
        retry = (optuna.storages.RetryHeartbeatStaleTrialCallback if new
                 else optuna.storages.RetryFailedTrialCallback)(max_retry=MAX_RETRIES)  # fmt: skip
    kwargs: dict[str, Any] = dict(heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    kwargs["heartbeat_stale_trial_callback" if new else "failed_trial_callback"] = partial(
        _retry_own, retry
    )
    if url.startswith("sqlite:"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # seconds waiting on a lock
    for attempt in range(5):
        try:
            with quiet_experimental():
                return optuna.storages.RDBStorage(url, **kwargs)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))


def _retry_own(retry, study, trial) -> None:
    """Retry a dead worker's default or final trial (the study needs them); a searched one is
    only failed: the sampler proposes others, and a config that kills its process (out of
    memory) is not run again on every worker. The retry keeps the trial's role, not its run
    (``RUN_ATTRS``): with the dead worker's name, a retry just asked for would look dead to
    another worker's ``fail_stale`` until its run named its own."""
    if DEFAULT_ATTR in trial.user_attrs or FINAL_ATTR in trial.user_attrs:
        trial = copy.deepcopy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in RUN_ATTRS}
        retry(study, trial)


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
