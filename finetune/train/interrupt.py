"""Stopping well: the first Ctrl-C stops a run after the current optimizer step (the saved state
is consistent), a second one at once; loggers are closed whatever happens.

Example:
    >>> with deferred_interrupt(trainer), closing(trainer.loggers):  # doctest: +SKIP
    ...     train()
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import TYPE_CHECKING, Iterator

from ..events import emit

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["StopRequested", "deferred_interrupt", "closing", "on_sigint"]


class StopRequested(KeyboardInterrupt):
    """The first Ctrl-C, acted on at an optimizer-step boundary (the state is consistent)."""


@contextlib.contextmanager
def closing(loggers: list):
    try:
        yield
    finally:
        for logger in loggers:
            logger.close()


@contextlib.contextmanager
def on_sigint(handler) -> Iterator[None]:
    """``handler(signum, frame)`` takes Ctrl-C while the block runs, the previous one after; in
    the main thread only (signals go there), elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def deferred_interrupt(trainer: "Trainer"):
    """The first Ctrl-C asks the loop to stop after the current optimizer step, so the saved
    state is consistent; a second one interrupts at once."""

    def handler(signum, frame):
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True
        emit("warning", "stopping after this step (Ctrl-C again to stop now)")

    with on_sigint(handler):
        yield
