"""Experiment loggers: every finished epoch's record goes to ``metrics.csv`` and to the loggers the
config asks for (``output.log``: ``tensorboard``, ``wandb``, ``mlflow``). One small interface:
``log_epochs(records)`` gets the whole history (so a resumed run rewrites what the interrupted one
left) and ``close()``; one that sets its ``halt`` attribute (a reason) in ``log_epochs`` ends the
run after that epoch, as if it had ended on time (a tuner's budget). The trackers
(``finetune.train.tracking``) also have ``finish(plan=, files=)``, called once the run's plots
exist (``finish_loggers``). A tuner groups its trials' tracked runs with ``tracking_group``.

Example:
    >>> loggers = build_loggers(("tensorboard",), run_dir)  # doctest: +SKIP
    >>> for logger in loggers: logger.log_epochs(history.epochs)  # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import os
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol, Sequence

from .._io import METRICS_CSV_NAME, TENSORBOARD_DIR, atomic_path, read_run_config

__all__ = [
    "Logger",
    "CsvLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "MlflowLogger",
    "TrackingGroup",
    "tracking_group",
    "build_loggers",
    "finish_loggers",
]


class Logger(Protocol):
    def log_epochs(self, records: Sequence[dict]) -> None: ...

    def close(self) -> None: ...


class CsvLogger:
    """``metrics.csv``: one row per epoch, a column per field (rewritten whole: it is small)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / METRICS_CSV_NAME

    def log_epochs(self, records: Sequence[dict]) -> None:
        fields: list[str] = []
        for record in records:
            fields += [k for k in record if k not in fields]
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(records)

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """TensorBoard scalars under ``RUN_DIR/tensorboard`` (``tensorboard --logdir RUN_DIR``), one
    point per epoch for every numeric field."""

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError(
                "--log tensorboard needs the tensorboard package: "
                "pip install 'finetune[tensorboard]'"
            ) from None
        self.make_writer, self.folder, self.writer = (
            SummaryWriter,
            Path(run_dir) / TENSORBOARD_DIR,
            None,
        )

    def log_epochs(self, records: Sequence[dict]) -> None:
        record = records[-1]  # one call per epoch; earlier epochs were logged when they ended
        if self.writer is None:  # a resumed run drops what the interrupted one logged after it
            self.writer = self.make_writer(str(self.folder), purge_step=record["epoch"])
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self.writer.add_scalar(key, value, global_step=record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass(frozen=True)
class TrackingGroup:
    """Runs tracked together (a study's trials): one W&B group / MLflow experiment, files in
    ``folder`` instead of each run directory."""

    name: str
    folder: Path


_GROUP: ContextVar[Optional[TrackingGroup]] = ContextVar("finetune_tracking_group", default=None)


@contextlib.contextmanager
def tracking_group(name: str, folder: str | os.PathLike) -> Iterator[TrackingGroup]:
    """Runs started in the block are tracked under ``name``, their tracker files in ``folder``.

    Example:
        >>> with tracking_group("my-study", "runs/tune"):  # doctest: +SKIP
        ...     adapt("resnet50", "photos", log=("mlflow",))
    """
    group = TrackingGroup(name, Path(folder))
    token = _GROUP.set(group)
    try:
        yield group
    finally:
        _GROUP.reset(token)


def _require(module: str, extra: str):
    """Import a tracker's package, or one error that names the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(
            f"--log {extra} needs the {extra} package: pip install 'finetune[{extra}]'"
        ) from None


def _flat(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1e-3}}`` -> ``{"optim.lr": 1e-3}``."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _numbers(record: dict) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in record.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"
    }


def _final_metrics(run_dir: Path) -> dict[str, float]:
    """``val_accuracy``, ``test_macro_f1``, ...: the scalars of the run's final reports."""
    metrics = read_run_config(run_dir).get("finetune", {}).get("metrics") or {}
    return {
        f"{split}_{k}": float(v)
        for split in ("val", "test")
        for k, v in (metrics.get(split) or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


PLAN_COLUMNS = ("stage", "modules", "params", "trainable", "state", "peak_lr")


def _plan_rows(plan) -> list[list[Any]]:
    return [
        [r.stage, ", ".join(r.modules), r.params, r.trainable, r.state, r.peak_lr]
        for r in plan.rows
    ]


def _plan_markdown(plan) -> str:
    lines = [f"# {plan.title}", "", "| " + " | ".join(PLAN_COLUMNS) + " |"]
    lines.append("|" + " --- |" * len(PLAN_COLUMNS))
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in _plan_rows(plan)]
    return "\n".join(lines + ["", plan.summary, ""])


def _failure() -> Optional[str]:
    """Why a run is being closed while an exception propagates: ``killed`` (Ctrl-C, a pruned
    trial) or ``failed``; None on a normal end. ``close`` runs in the trainer's ``finally``."""
    error = sys.exc_info()[1]
    if error is None:
        return None
    stopped = isinstance(error, KeyboardInterrupt) or type(error).__name__ == "TrialPruned"
    return "killed" if stopped else "failed"


class WandbLogger:
    """A Weights & Biases run: the resolved config, a point per epoch, then the plan table, the
    plots and the final metrics. Files go to ``RUN_DIR/wandb`` (``WANDB_MODE=offline`` works
    without an account; ``wandb sync`` uploads later); project ``$WANDB_PROJECT`` or finetune."""

    def __init__(self, run_dir: Path):
        wandb = _require("wandb", "wandb")
        self.run_dir, self.wandb, self.logged = Path(run_dir), wandb, 0
        group = _GROUP.get()
        folder = group.folder if group else self.run_dir
        folder.mkdir(parents=True, exist_ok=True)
        config = read_run_config(self.run_dir).get("finetune", {}).get("config") or {}
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "finetune"),
            dir=str(folder),
            name=self.run_dir.name,
            group=group.name if group else None,
            job_type="trial" if group else "run",
            config={**config, "run_dir": str(self.run_dir)},
            reinit="create_new",  # a tuner runs many trials in one process
        )
        self.run.define_metric("*", step_metric="epoch")  # charts over epochs, not log calls

    def log_epochs(self, records: Sequence[dict]) -> None:
        for record in records[self.logged :]:  # a resumed run logs its whole history once
            self.run.log({**_numbers(record), "epoch": record["epoch"]})
        self.logged = len(records)

    def close(self) -> None:
        why = _failure()
        if why is not None and self.run is not None:
            self.run.summary["finetune_status"] = why
            self.run.finish(exit_code=1)
            self.run = None
        elif self.run is not None:  # normal end: ``finish`` follows once the plots exist
            atexit.register(self._end)

    def finish(self, *, plan=None, files: Sequence[Path] = ()) -> None:
        if self.run is None:
            return
        if plan is not None:
            self.run.log({"plan": self.wandb.Table(columns=list(PLAN_COLUMNS),
                                                   data=_plan_rows(plan))})  # fmt: skip
        images = {f"plots/{Path(f).stem}": self.wandb.Image(str(f))
                  for f in files if Path(f).suffix == ".png"}  # fmt: skip
        if images:
            self.run.log(images)
        self.run.summary.update(_final_metrics(self.run_dir))
        atexit.unregister(self._end)
        self._end()

    def _end(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


class MlflowLogger:
    """An MLflow run: the resolved config as params (``optim.lr``) and ``config.json`` as an
    artifact, a point per epoch, then ``plan.md``, ``plots/`` and the final metrics. Tracking
    URI ``$MLFLOW_TRACKING_URI``, else the local file store ``RUN_DIR/mlruns`` (``mlflow ui
    --backend-store-uri RUN_DIR/mlruns``); experiment ``$MLFLOW_EXPERIMENT_NAME`` or finetune."""

    def __init__(self, run_dir: Path):
        _require("mlflow", "mlflow")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.run_dir, self.logged = Path(run_dir), 0
        group = _GROUP.get()
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = ((group.folder if group else self.run_dir) / "mlruns").resolve().as_uri()
            # MLflow 3 refuses its file store unless asked for; a local run wants no server
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        name = group.name if group else os.environ.get("MLFLOW_EXPERIMENT_NAME", "finetune")
        tags = {"finetune.run_dir": str(self.run_dir)}
        if group:
            tags["finetune.study"] = group.name
        run = self.client.create_run(self._experiment(name), run_name=self.run_dir.name, tags=tags)
        self.run_id: Optional[str] = run.info.run_id
        config = read_run_config(self.run_dir).get("finetune", {}).get("config") or {}
        params = [Param(k, str(v)[:6000]) for k, v in _flat(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        self.client.log_dict(self.run_id, config, "config.json")

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # another worker of the study created it just now
            return self.client.get_experiment_by_name(name).experiment_id

    def log_epochs(self, records: Sequence[dict]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(k, v, now, record["epoch"])
            for record in records[self.logged :]
            for k, v in _numbers(record).items()
        ]
        if metrics and self.run_id is not None:
            self.client.log_batch(self.run_id, metrics=metrics)
        self.logged = len(records)

    def close(self) -> None:
        why = _failure()
        if why is not None:
            self._end("KILLED" if why == "killed" else "FAILED")
        elif self.run_id is not None:  # normal end: ``finish`` follows once the plots exist
            atexit.register(self._end)

    def finish(self, *, plan=None, files: Sequence[Path] = ()) -> None:
        if self.run_id is None:
            return
        if plan is not None:
            self.client.log_text(self.run_id, _plan_markdown(plan), "plan.md")
        for f in files:
            if Path(f).suffix == ".png":
                self.client.log_artifact(self.run_id, str(f), "plots")
        for key, value in _final_metrics(self.run_dir).items():
            self.client.log_metric(self.run_id, f"final_{key}", value)
        atexit.unregister(self._end)
        self._end()

    def _end(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status)
            self.run_id = None


def build_loggers(names: Sequence[str], run_dir: Path) -> list[Logger]:
    """``metrics.csv`` always, plus one logger per name in ``names``."""
    loggers: list[Logger] = [CsvLogger(run_dir)]
    if "tensorboard" in names:
        loggers.append(TensorBoardLogger(run_dir))
    if "wandb" in names:  # the trackers import their packages only when asked for
        loggers.append(WandbLogger(run_dir))
    if "mlflow" in names:
        loggers.append(MlflowLogger(run_dir))
    return loggers


def finish_loggers(loggers: Sequence[Any], *, plan: Any = None, files: Sequence[Path] = ()) -> None:
    """After the run's report is written: the trackers log the plan and the plots and end their
    run (``close`` at the end of training came before the plots existed).

    Example:
        >>> finish_loggers(trainer.loggers, plan=plan, files=write_run_report(run_dir))  # doctest: +SKIP
    """
    for logger in loggers:
        finish = getattr(logger, "finish", None)
        if finish is not None:
            finish(plan=plan, files=files)
