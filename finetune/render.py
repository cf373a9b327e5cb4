"""Rendering: turns finetune's events and reports into rich output for people.

The library never prints (see ``finetune.events``); the CLI, ``finetune demo`` and
``adapt(verbose=True)`` install ``Renderer(console)`` as the listener. Every user-supplied string
(class names, paths) is escaped, so ``[/]`` in a class name prints as itself. Output that is not a
terminal gets no progress bars, only the lines.

Example:
    >>> from rich.console import Console
    >>> from finetune.events import emit, listening
    >>> with listening(Renderer(Console(highlight=False))):
    ...     emit("info", "class [/] is fine")
    class [/] is fine
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .events import emit, has_listeners, listening

__all__ = [
    "Renderer",
    "reporting",
    "plan_table",
    "report_table",
    "multilabel_table",
    "scan_report",
    "epoch_line",
]


class Renderer:
    """An event listener that prints to a rich ``Console``."""

    def __init__(self, console: Console):
        self.console = console
        self.bars: dict[str, Any] = {}  # progress key -> (rich Progress, task id)

    def __call__(self, event) -> None:
        kind, data = event.kind, event.data
        if kind == "progress":
            self._progress(data)
        elif kind == "warning" or (kind == "info" and data.get("warn")):
            self.console.print(f"[yellow]{escape(event.message)}[/]", soft_wrap=True)
        elif kind == "info":
            self.console.print(escape(event.message), soft_wrap=True)
        elif kind == "plan":
            self.console.print(plan_table(data["plan"]))
        elif kind == "report":
            table = multilabel_table if data.get("multilabel") else report_table
            self.console.print(table(data["report"], data["title"]))
        elif kind == "scan":
            scan_report(data["data"], self.console)
        elif kind == "epoch":
            self.console.print(
                epoch_line(data["record"], data["epochs"], data["score_name"]), soft_wrap=True
            )

    def _progress(self, data: dict) -> None:
        if not self.console.is_terminal:
            return
        key = data["key"]
        if data["done"] is None:  # the end of this bar
            bar = self.bars.pop(key, None)
            if bar is not None:
                bar[0].stop()
            return
        if key not in self.bars:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[stats]}"),
                console=self.console,
                transient=True,
            )
            task = progress.add_task(escape(data["title"]), total=data["total"], stats="")
            progress.start()
            self.bars[key] = (progress, task)
        progress, task = self.bars[key]
        progress.update(task, completed=data["done"], stats=escape(data.get("stats", "")))


@contextmanager
def reporting(verbose: bool = True, console: Optional[Console] = None) -> Iterator[None]:
    """While the block runs, render events and Python warnings (``verbose``), or silence both.

    Nested use renders once: inside the CLI (which already renders) ``adapt(verbose=True)``
    adds nothing.

    Example:
        >>> with reporting(verbose=False):
        ...     warnings.warn("nobody sees this")
    """
    with warnings.catch_warnings():
        if not verbose:
            warnings.simplefilter("ignore")
            with _quiet_logger("timm"):  # its scheduler logs notes through logging.lastResort
                yield
            return
        if has_listeners():
            yield
            return
        # one line per warning, no source line: they are messages for users, not developers
        warnings.showwarning = lambda message, *args, **kwargs: emit(
            "warning", f"warning: {message}"
        )
        with listening(Renderer(console or Console(highlight=False))):
            yield


@contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def epoch_line(r: dict, epochs: int, score_name: str) -> str:
    """One line per finished epoch: train loss/accuracy, validation, throughput, time."""
    score = r[score_name]
    name = "mAP" if score_name == "val_map" else "acc"
    val = (
        "no val data"
        if score is None
        else f"val loss {r['val_loss']:.4f} {name} {score:.4f}{' *' if r['best'] else ''}"
    )
    return (
        f"epoch {r['epoch']}/{epochs}  train loss {r['train_loss']:.4f} acc "
        f"{r['train_accuracy']:.4f} | {val} | {r['train_images_per_s']:.1f} img/s, "
        f"{r['epoch_seconds']:.0f} s"
    )


def plan_table(plan) -> Table:
    """A ``finetune.train.plan.Plan`` as a table."""
    table = Table(title=escape(plan.title))
    for col in ("stage", "modules", "params", "trainable", "state", "peak lr", "wd"):
        table.add_column(col, justify="left" if col in ("stage", "modules", "state") else "right")
    for row in plan.rows:
        mods = ", ".join(row.modules[:4]) + (", ..." if len(row.modules) > 4 else "")
        lr = f"{row.peak_lr:.3g}" if row.peak_lr is not None else ""
        wd = f"{row.weight_decay:g}" if row.weight_decay is not None else ""
        table.add_row(
            escape(row.stage),
            escape(mods),
            f"{row.params:,}",
            f"{row.trainable:,}",
            row.state,
            lr,
            wd,
        )
    table.caption = plan.summary + (
        "\nwd applies to weights only; biases, norm weights and position/class tokens get none"
        if plan.with_optim
        else ""
    )
    return table


def report_table(report: dict, title: str):
    """A rich table of a ``classification_report``."""
    table = Table(
        title=f"{escape(title)}: accuracy {report['accuracy']:.4f} "
        f"(macro recall {report['macro_recall']:.4f}, n={report['num_samples']})"
    )
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, row in report["per_class"].items():
        table.add_row(
            escape(name),
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
            str(row["support"]),
        )
    return table


def multilabel_table(report: dict, title: str):
    """A rich table of a ``multilabel_report``."""
    table = Table(
        title=f"{escape(title)}: mAP {report['mAP']:.4f}, macro AUC {report['macro_auc']:.4f}, "
        f"micro F1 {report['micro_f1']:.4f} (n={report['num_samples']})"
    )
    for col in ("label", "AUC", "AP", "F1", "threshold", "support"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for name, row in report["per_label"].items():
        table.add_row(
            escape(name),
            f"{row['auc']:.3f}",
            f"{row['ap']:.3f}",
            f"{row['f1']:.3f}",
            f"{row['threshold']:.3f}",
            str(row["support"]),
        )
    return table


def scan_report(data, console, *, max_rows: int = 20) -> None:
    """Print what a scan found: images per class and split, sizes and modes, how high-depth data
    is scaled, imbalance, bad and suspicious files, duplicates across splits, and last the
    problems that stop a run (``data.errors``). ``data`` is a ``DataInfo``."""
    counts = data.counts()
    train_counts = counts.get("train", [0] * data.num_classes)
    table = Table(title=f"{escape(data.root)} ({data.layout}): {data.num_classes} classes")
    table.add_column("class")
    for split in counts:
        table.add_column(split, justify="right")
    table.add_column("train share", justify="right")
    train_total = max(sum(train_counts), 1)
    for i, name in enumerate(data.classes):
        table.add_row(
            escape(name),
            *(f"{counts[s][i]:,}" for s in counts),
            f"{100 * train_counts[i] / train_total:.1f} %",
        )
    table.add_row("[bold]total[/]", *(f"[bold]{sum(c):,}[/]" for c in counts.values()), "")
    console.print(table)
    checks = [c for c in data.checks.values() if not c.problem]
    if checks:
        areas = sorted(checks, key=lambda c: c.width * c.height)
        small, mid, large = areas[0], areas[len(areas) // 2], areas[-1]
        modes: dict[str, int] = {}
        for c in checks:
            key = f"{c.format} {c.mode}"
            modes[key] = modes.get(key, 0) + 1
        # how high-depth data becomes [0, 1] is worded by the data layer (FileCheck.scaling)
        scaling = sorted({c.scaling for c in checks if getattr(c, "scaling", "")})
        console.print(
            f"image sizes: smallest {small.width}x{small.height}, median "
            f"{mid.width}x{mid.height}, largest {large.width}x{large.height}; "
            + ", ".join(f"{n:,} {k}" for k, n in sorted(modes.items(), key=lambda kv: -kv[1]))
            + (escape("\nscaling: " + ", ".join(scaling)) if scaling else "")
        )
    train = [n for n in train_counts if n]
    ratio = max(train) / min(train) if train else 1.0
    hint = " - consider --class-weights auto or --sampler balanced" if ratio >= 3 else ""
    console.print(f"class imbalance (largest / smallest train class): {ratio:.1f}{hint}")
    for title, rows in (
        ("unreadable files (skipped)", data.skipped),
        ("suspicious files (used; --strict rejects them)", data.suspicious),
        ("identical files in two splits", data.duplicates),
    ):
        if not rows:
            continue
        bad = Table(title=f"{len(rows)} {title}")
        bad.add_column("file")
        bad.add_column("reason" if title != "identical files in two splits" else "same bytes as")
        for a, b in rows[:max_rows]:
            bad.add_row(escape(str(a)), escape(str(b)))
        if len(rows) > max_rows:
            bad.caption = f"... and {len(rows) - max_rows} more"
        console.print(bad)
    console.print(
        f"scanned {len(data.checks):,} files in {data.scan_seconds:.1f} s "
        f"({data.cache_hits:,} from the scan cache)"
    )
    errors = getattr(data, "errors", ())
    if errors:  # last, where the eye lands: why `finetune scan` exits non-zero
        lines = [f"[bold red]{len(errors)} problem(s) that stop a run:[/]"]
        console.print("\n".join(lines + [f"[red]- {escape(m)}[/]" for m in errors]), soft_wrap=True)
