"""How a study looks while it runs: the study's own lines, each trial's epoch lines and (in a
terminal) its live bars, but not every trial's plan, scan and report tables.

Example:
    >>> with tune_reporting(verbose=True):  # doctest: +SKIP
    ...     tune("resnet50", "photos", budget="30m")
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ...events import has_listeners, listening
from ...render import Renderer, reporting

__all__ = ["TrialView", "tune_reporting"]


class TrialView:
    """An event listener in front of a ``Renderer``: passes ``tune`` lines, warnings, epoch
    lines and live progress bars (a terminal only: piped, a line per 10 % of every epoch of
    every trial says too little for its length)."""

    def __init__(self, renderer: Renderer):
        self.renderer = renderer

    def __call__(self, event) -> None:
        kind = event.kind
        if (
            kind in ("epoch", "warning")
            or event.data.get("tune")
            or (kind == "progress" and self.renderer.console.is_terminal)
        ):
            self.renderer(event)


@contextmanager
def tune_reporting(verbose: bool = True) -> Iterator[None]:
    """Render a study's events (``TrialView``) while the block runs; nested use renders once,
    ``verbose=False`` silences everything."""
    if not verbose or has_listeners():
        with reporting(verbose):
            yield
        return
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # a file or a pipe: lines stay whole
        console.width = 10_000
    with listening(TrialView(Renderer(console))):
        yield
