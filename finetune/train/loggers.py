"""Experiment loggers: every finished epoch's record goes to ``metrics.csv`` and to the loggers the
config asks for (``output.log``: ``tensorboard``). One small interface: ``log_epochs(records)``
gets the whole history (so a resumed run rewrites what the interrupted one left) and
``close()``.

Example:
    >>> loggers = build_loggers(("tensorboard",), run_dir)  # doctest: +SKIP
    >>> for logger in loggers: logger.log_epochs(history.epochs)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Protocol, Sequence

from .._io import METRICS_CSV_NAME, TENSORBOARD_DIR, atomic_path

__all__ = ["Logger", "CsvLogger", "TensorBoardLogger", "build_loggers"]


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


def build_loggers(names: Sequence[str], run_dir: Path) -> list[Logger]:
    """``metrics.csv`` always, plus one logger per name in ``names``."""
    loggers: list[Logger] = [CsvLogger(run_dir)]
    if "tensorboard" in names:
        loggers.append(TensorBoardLogger(run_dir))
    return loggers
