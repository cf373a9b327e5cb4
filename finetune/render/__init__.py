"""Rendering: turns finetune's events and reports into rich output for people.

The library never prints (see ``finetune.events``); the CLI, ``finetune demo`` and
``adapt(verbose=True)`` install ``Renderer(console)`` as the listener. Every user-supplied string
(class names, paths) is escaped, so ``[/]`` in a class name prints as itself. Output that is not a
terminal gets no live bars and no wrapping: a progress line every ~10 % and every line whole.

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

from ..events import emit, has_listeners, listening
from .tables import duration, epoch_line, multilabel_table, plan_table, report_table, scan_report

__all__ = [
    "Renderer",
    "reporting",
    "plan_table",
    "report_table",
    "multilabel_table",
    "scan_report",
    "epoch_line",
]

BEST_NOTE = "  (* = best validation score so far: its weights are in model.safetensors)"


class Renderer:
    """An event listener that prints to a rich ``Console``.

    In a terminal, progress is a live bar (training, validation, scans); piped to a file it is
    one plain line every ~10 % of the work with throughput and ETA, and nothing is wrapped.
    """

    def __init__(self, console: Console):
        self.console = console
        self.bars: dict[str, Any] = {}  # progress key -> (rich Progress, task id)
        self.tenths: dict[str, int] = {}  # progress key -> last 10 % step printed (files)
        self.best_explained = False

    def __call__(self, event) -> None:
        kind, data = event.kind, event.data
        if kind == "progress":
            self._progress(data)
        elif kind == "warning" or (kind == "info" and data.get("warn")):
            self._line(f"[yellow]{escape(event.message)}[/]")
        elif kind == "info":
            self._line(escape(event.message))
        elif kind == "plan":
            self.console.print(plan_table(data["plan"]))
        elif kind == "report":
            table = multilabel_table if data.get("multilabel") else report_table
            self.console.print(table(data["report"], data["title"]))
        elif kind == "scan":
            scan_report(data["data"], self.console)
        elif kind == "epoch":
            self._epoch(data)

    def _line(self, text: str) -> None:
        self.console.print(text, soft_wrap=True)  # soft: long paths and numbers stay whole

    def _epoch(self, data: dict) -> None:
        line = epoch_line(data["record"], data["epochs"], data["score_name"], data.get("eta"))
        record = data["record"]
        if record.get("best") and record.get(data["score_name"]) is not None:
            if not self.best_explained:
                line += BEST_NOTE
                self.best_explained = True
        self._line(escape(line))

    def _progress(self, data: dict) -> None:
        if not self.console.is_terminal:
            self._progress_line(data)
            return
        key = data["key"]
        if data["done"] is None:  # the end of this bar
            bar = self.bars.pop(key, None)
            if bar is not None:
                bar[0].stop()
            return
        if key not in self.bars:
            self.bars[key] = self._bar(data)
        progress, task = self.bars[key]
        progress.update(task, completed=data["done"], stats=escape(data.get("stats", "")))

    def _bar(self, data: dict):
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
        return progress, task

    def _progress_line(self, data: dict) -> None:
        """Piped output: a line each time the work crosses another 10 % (none at 100 %: the
        epoch line or the report follows)."""
        key, done, total = data["key"], data["done"], data["total"]
        if not data.get("log", True):
            return
        if done is None or not total:
            self.tenths.pop(key, None)
            return
        tenth = min(10, done * 10 // total)
        if tenth <= self.tenths.get(key, 0) or tenth >= 10:
            return
        self.tenths[key] = tenth
        seconds = data.get("seconds") or 0.0
        eta = seconds * (total - done) / done
        stats = f" {data['stats']}" if data.get("stats") else ""
        self._line(
            escape(f"{data['title']}: {tenth * 10}% ({done}/{total}){stats}, ETA {duration(eta)}")
        )


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
        console = console or Console(highlight=False)
        if not console.is_terminal:  # a file or a pipe: never wrap (tables as wide as they are)
            console.width = 10_000
        # one line per warning, no source line: they are messages for users, not developers
        warnings.showwarning = lambda message, *args, **kwargs: emit(
            "warning", f"warning: {message}"
        )
        with listening(Renderer(console)):
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
