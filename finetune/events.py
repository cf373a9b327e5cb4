"""Events: how the library says what it is doing without printing anything itself.

Library code calls ``emit(kind, message, **data)``. Nothing happens unless a listener is
installed with ``listening(fn)``: the CLI and ``adapt(verbose=True)`` install the rich renderer
of ``finetune.render``; tests install a list's ``append``. Messages are plain text (never rich
markup): the renderer escapes them, so a class named ``[/]`` prints as itself.

Kinds: ``info`` and ``warning`` (a message), ``plan``/``report``/``scan``/``epoch`` (a report
object in ``data``), and ``progress`` (``key``, ``title``, ``done``, ``total``, ``stats``;
``done is None`` ends the bar).

Example:
    >>> seen = []
    >>> with listening(seen.append):
    ...     emit("info", "hello")
    >>> seen[0].kind, seen[0].message
    ('info', 'hello')
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

__all__ = ["Event", "emit", "listening", "has_listeners", "track", "Progress"]

T = TypeVar("T")
Listener = Callable[["Event"], None]
# module-global, not a ContextVar: scan threads must reach the same listeners
_LISTENERS: list[Listener] = []


@dataclass(frozen=True)
class Event:
    """One thing the library says: a kind, a plain-text message, and data."""

    kind: str
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def emit(kind: str, message: str = "", **data: Any) -> None:
    """Send an event to every installed listener (none: the call costs a list lookup)."""
    if _LISTENERS:
        event = Event(kind, message, data)
        for listener in list(_LISTENERS):
            listener(event)


def has_listeners() -> bool:
    """True while someone listens (so callers can skip building costly messages)."""
    return bool(_LISTENERS)


@contextmanager
def listening(listener: Listener) -> Iterator[Listener]:
    """Install ``listener`` for the duration of the block."""
    _LISTENERS.append(listener)
    try:
        yield listener
    finally:
        _LISTENERS.remove(listener)


class Progress:
    """A progress bar as events, sent at most every ``interval`` seconds (and at the end).

    Example:
        >>> with Progress("decode", total=3) as bar:
        ...     for i in range(3):
        ...         bar.update(i + 1)
    """

    def __init__(
        self, title: str, *, total: int, interval: float = 0.25, key: str = "", log: bool = True
    ):
        self.title, self.total, self.interval, self.log = title, total, interval, log
        self.key = key or title
        self.start = self.last = time.perf_counter()
        self.active = has_listeners()

    def __enter__(self) -> "Progress":
        self._send(0, "")
        return self

    def __exit__(self, *exc) -> None:
        self._send(None, "")

    def due(self, done: int) -> bool:
        """True at the end and every ``interval`` seconds (also a cue for periodic checks)."""
        return done >= self.total or time.perf_counter() - self.last >= self.interval

    def update(self, done: int, stats: str = "", *, force: bool = False) -> None:
        if force or self.due(done):
            self.last = time.perf_counter()
            self._send(done, stats)

    def wrap(self, items: Iterable[T]) -> Iterator[T]:
        """Yield ``items`` inside this bar, one update per item (throttled)."""
        with self:
            for i, item in enumerate(items):
                yield item
                self.update(i + 1)

    def _send(self, done: Optional[int], stats: str) -> None:
        if self.active:
            emit(
                "progress",
                key=self.key,
                title=self.title,
                done=done,
                total=self.total,
                stats=stats,
                log=self.log,
                seconds=time.perf_counter() - self.start,
            )


def track(items: Iterable[T], title: str, *, total: int) -> Iterator[T]:
    """Yield ``items`` while sending progress events (``rich.progress.track`` as events)."""
    yield from Progress(title, total=total).wrap(items)
