"""Ctrl-C in a study: the first one stops the study before its next trial (a trial in training
stops after its current step: the trainer's own handler, ``train.interrupt``; a trial in its
set-up or wrap-up after its current epoch, ``raise_if_interrupted`` in the reporter), a second
one at once. The first is not raised where it lands: a KeyboardInterrupt raised inside a
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

__all__ = ["stop_on_interrupt", "raise_if_interrupted"]

_requested = threading.Event()


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[None]:
    """While the block runs, the first Ctrl-C is remembered, a second one raised."""
    _requested.clear()

    def handler(signum, frame):
        if _requested.is_set():
            raise KeyboardInterrupt
        _requested.set()
        emit("warning", "stopping the study before its next trial (Ctrl-C again to stop now)")

    try:
        with on_sigint(handler):
            yield
    finally:
        _requested.clear()


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt when Ctrl-C was pressed in this study."""
    if _requested.is_set():
        raise KeyboardInterrupt
