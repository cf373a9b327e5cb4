"""Ctrl-C in a study: it stops the study wherever it lands. A KeyboardInterrupt raised inside a
finalizer (SQLAlchemy's, Optuna's) is swallowed by Python ("Exception ignored in ..."), so the
signal is also remembered, and the study stops before its next trial. Regression (the
hostile-input pass): such a Ctrl-C was lost and the study ran to its end with exit 0. Within a
trial's training the trainer's own handler stops after the current step (``train.interrupt``).

Example:
    >>> with stop_on_interrupt():  # doctest: +SKIP
    ...     while True:
    ...         raise_if_interrupted()
    ...         run_a_trial()
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

__all__ = ["stop_on_interrupt", "raise_if_interrupted"]

_requested = threading.Event()


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[None]:
    """While the block runs, Ctrl-C raises KeyboardInterrupt and is remembered."""
    _requested.clear()
    if threading.current_thread() is not threading.main_thread():  # signals go to the main one
        yield
        return

    def handler(signum, frame):
        _requested.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested.clear()


def raise_if_interrupted() -> None:
    """Raise the KeyboardInterrupt a finalizer swallowed."""
    if _requested.is_set():
        raise KeyboardInterrupt
