"""Ctrl-C in a study: the first one stops the study before its next trial (a trial in training
stops after its current step: the trainer's own handler, ``train.interrupt``; a trial setting
up its run at once, ``setting_up``; one in its wrap-up completes), a second one at once. Out of
a trial's set-up the first is not raised where it lands: a KeyboardInterrupt raised inside a
finalizer (SQLAlchemy's, Optuna's) is swallowed by Python with a traceback ("Exception ignored
in ..."). Regressions (the hostile-input passes): such a Ctrl-C was lost and the study ran to
its end with exit 0; one that landed in a trial's wrap-up failed a trial that had trained.

Example:
    >>> with stop_on_interrupt():  # doctest: +SKIP
    ...     while True:
    ...         raise_if_interrupted()
    ...         run_a_trial()
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from ...events import emit
from ...train.interrupt import on_sigint

__all__ = ["stop_on_interrupt", "raise_if_interrupted", "setting_up", "set_up_done"]

_requested = threading.Event()
_setting_up = threading.Event()  # a trial's run is being set up: Ctrl-C stops it at once


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[None]:
    """While the block runs, the first Ctrl-C is remembered, a second one raised."""
    _requested.clear()

    def handler(signum, frame):
        if _requested.is_set():
            raise KeyboardInterrupt
        _requested.set()
        if _setting_up.is_set():  # finetune's own set-up code, no finalizer to swallow it
            raise KeyboardInterrupt
        emit("warning", "stopping the study before its next trial (Ctrl-C again to stop now)")

    try:
        with on_sigint(handler):
            yield
    finally:
        _requested.clear()


@contextlib.contextmanager
def setting_up() -> Iterator[None]:
    """The block runs a trial's run: until ``set_up_done`` (its first epoch logged), the first
    Ctrl-C stops it at once. Regression: it stopped after the first epoch, which on a large
    data set is minutes (the set-up's teacher pass and image cache came before it)."""
    _setting_up.set()
    try:
        raise_if_interrupted()  # pressed since the study's last check (its ask, its sampling)
        yield
    finally:
        _setting_up.clear()


def set_up_done() -> None:
    """The trial's training has begun: Ctrl-C is the trainer's (after this step), then, in the
    wrap-up, remembered until the trial has completed."""
    _setting_up.clear()


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt when Ctrl-C was pressed in this study."""
    if _requested.is_set():
        raise KeyboardInterrupt
