"""What a study leaves in ``OUTPUT/study/``: ``trials.csv`` (every trial of the study, from every
worker), ``best.yaml`` (the best trial's whole config as a recipe), ``summary.json`` and the
Optuna plots ``history.png`` and ``importances.png``.

Example:
    >>> rows = trial_rows(study)  # doctest: +SKIP
    >>> write_trials_csv(rows, Path("runs/tune/study/trials.csv"))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..._io import atomic_path, read_run_config
from ...config import FinetuneConfig

__all__ = [
    "TrialRow",
    "trial_rows",
    "write_trials_csv",
    "write_best_yaml",
    "write_plots",
    "FINAL_ATTR",
]

FINAL_ATTR = "final_of"  # user attribute of the final trial: the trial whose config it retrains


@dataclass(frozen=True)
class TrialRow:
    """One trial as the table shows it."""

    number: int
    state: str  # complete, pruned, fail, running, waiting
    value: Optional[float]
    params: dict[str, Any]
    seconds: Optional[float]
    epochs: Optional[int]  # epochs it trained
    run_dir: Optional[str]
    note: str = ""  # what it was, why it was pruned, stopped by the budget or failed
    best: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def trial_rows(study) -> list[TrialRow]:
    """Every trial of the study, in order; the best complete one is marked."""
    best = _best_number(study)
    rows = []
    for t in study.trials:
        attrs = t.user_attrs
        waiting = t.state.name == "WAITING"  # a retry copies the dead trial's user attributes
        rows.append(
            TrialRow(
                number=t.number,
                state=t.state.name.lower(),
                value=t.value if t.values else None,
                params=dict(t.params),
                seconds=attrs.get("seconds"),
                epochs=attrs.get("epochs_trained"),
                run_dir=None if waiting else attrs.get("run_dir"),
                note=_waiting(t) if waiting else attrs.get("note") or _unrecorded(t),
                best=t.number == best,
            )
        )
    return rows


def _waiting(trial) -> str:
    """The note of an enqueued trial no worker has taken yet: the retry of a dead worker's
    trial (Optuna's retry callbacks list the trials it retries in ``retry_history``; their
    ``failed_trial`` is the first of them) or another queued trial.
    Regression: a retry's row showed the dead trial's note and run folder."""
    failed = (trial.system_attrs.get("retry_history") or [None])[-1]  # the latest to fail
    retry = "" if failed is None else f"the retry of trial {failed}, "
    return f"waiting: {retry}the next session or worker runs it"


def _unrecorded(trial) -> str:
    """The note of a trial whose process never recorded how it ended: a failed one without its
    ``seconds`` was failed by another worker once its heartbeats stopped or, on the same
    machine, its process was gone (Optuna refuses user attributes on a finished trial, so that
    worker cannot write the note)."""
    stale = trial.state.name == "FAIL" and "seconds" not in trial.user_attrs
    return "its worker stopped before it ended (killed, lost or stalled)" if stale else ""


def _best_number(study) -> Optional[int]:
    """The best complete trial's number (None before one completed). Among equal scores the
    final trial (the best config retrained with the rest of the budget, ``trial.FINAL_ATTR``)
    wins (the longest-trained of them), else the first: Optuna's ``best_trial`` would keep an
    earlier, shorter-trained one.
    Regression: a 30 s study whose trials all scored 1.0 named the default run, not the final
    run of the same config trained twice as long."""
    complete = [t for t in study.trials if t.state.name == "COMPLETE" and t.values]
    if not complete:
        return None
    top = max(t.value for t in complete)
    tied = [t for t in complete if t.value == top]
    final = [t for t in tied if FINAL_ATTR in t.user_attrs]
    if final:  # the longest-trained refit. Regression: a larger --budget's refit was ignored
        return max(final, key=lambda t: (t.user_attrs.get("train_s") or 0.0, t.number)).number
    return tied[0].number


def write_trials_csv(rows: list[TrialRow], path: Path) -> Path:
    """``trials.csv``: number, state, value, seconds, epochs_trained, best, run_dir, note, a column per
    searched field."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row.params if k not in keys]
    header = ["number", "state", "value", "seconds", "epochs_trained", "best", "run_dir", "note",
              *keys]  # fmt: skip
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for r in rows:
                writer.writerow(
                    [r.number, r.state, r.value, r.seconds, r.epochs, r.best, r.run_dir, r.note]
                    + [r.params.get(k) for k in keys]
                )
    return path


def write_best_yaml(
    run_dir: Path, path: Path, *, study_name: str, score: str, value: float
) -> Path:
    """``best.yaml``: the best trial's resolved config (every field) as a recipe, so that
    ``finetune run --recipe best.yaml --data DIR`` trains it again; its output folder is left
    to the new run."""
    saved = read_run_config(run_dir).get("finetune", {}).get("config")
    if not isinstance(saved, dict):
        raise ValueError(f"{run_dir}/config.json has no finetune config; not a finetune run")
    cfg = FinetuneConfig.from_dict(saved, source=f"{run_dir}/config.json")
    cfg = cfg.with_overrides(output=None, overwrite=False)
    refit = ", its config's: the run trained on the validation images too" * cfg.data.train_on_val
    header = (
        f"# best.yaml - the best trial of study '{study_name}' as a recipe.\n"
        f"# Data: {cfg.data.path}\n"
        f"# Result: {score} {value:.4f} (trial run directory {run_dir}){refit}.\n"
        "# Reproduce: finetune run --recipe best.yaml --data DIR (flags override the file).\n"
    )
    with atomic_path(path) as tmp:
        Path(tmp).write_text(header + cfg.to_yaml())
    return path


def write_summary(summary: dict, path: Path) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2, default=str))
    return path


def write_plots(study, folder: Path) -> list[Path]:
    """``history.png`` (optimisation history) and, with two complete trials or more,
    ``importances.png`` (parameter importances), drawn by optuna.visualization.matplotlib.
    A plot that cannot be drawn is a warning: the study it reports on is finished."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    jobs = [("history.png", ovm.plot_optimization_history)]
    if len(complete) >= 2 and any(len({str(t.params.get(k)) for t in complete}) > 1
                                  for k in complete[0].params):  # fmt: skip
        jobs.append(("importances.png", ovm.plot_param_importances))
    written = []
    for name, plot in jobs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" notes of optuna's matplotlib
                ax = plot(study)
                figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                figure.set_size_inches(8, 5)
                figure.tight_layout()
                with atomic_path(folder / name) as tmp:
                    figure.savefig(tmp, dpi=100, format="png")
                plt.close(figure)
            written.append(folder / name)
        except Exception as e:  # noqa: BLE001 - a plot is never worth failing a study
            warnings.warn(f"{folder / name}: not drawn ({type(e).__name__}: {e})")
    return written
