"""Error types for user input, and the helpers that make their messages useful.

Every error a user can cause names the offending file or key and the fix; where the input is a
choice, the message lists the valid choices and the closest ones ("did you mean").

Example:
    >>> did_you_mean("layr3", ["layer1", "layer2", "layer3"])
    ' Did you mean: layer3?'
"""

from __future__ import annotations

import difflib
from typing import Iterable

__all__ = [
    "ConfigError",
    "DataError",
    "WeightsNotFound",
    "did_you_mean",
    "first_line",
    "yaml_problem",
]


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message names the key and the fix."""


class DataError(ValueError):
    """A data folder or file that cannot be used as it is; the message names the path and the fix."""


class WeightsNotFound(FileNotFoundError):
    """No pretrained weights for a backbone on this machine: ``name``, each source ``tried``
    (``where: why``) and the ``fix``, which a caller with other options (the demo) replaces."""

    def __init__(self, name: str, tried: Iterable[str], fix: str):
        # a source's own message may end its sentence: "... is on.. Fix:" read badly
        self.name, self.tried, self.fix = name, tuple(t.rstrip(". ") for t in tried), fix
        super().__init__(
            f"no pretrained weights found for '{name}'. Tried: {'; '.join(self.tried)}. Fix: {fix}"
        )

    def __reduce__(self):  # pickled across processes (a DataLoader worker, DDP) like others
        return type(self), (self.name, self.tried, self.fix)


def did_you_mean(name: str, choices: Iterable[str], *, n: int = 3) -> str:
    """`` Did you mean: a, b?`` for the choices closest to ``name``, or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=n)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def first_line(e: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:limit]


def yaml_problem(e: BaseException) -> str:
    """A YAML parse error in one line: ``line 2, column 1: expected ',' or ']', but got ...``.
    Regression: PyYAML's message spans five lines (the context, the mark, a caret).

    Example:
        >>> yaml_problem(yaml.YAMLError("bad"))  # doctest: +SKIP
        'YAMLError: bad'
    """
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is None or not problem:
        return first_line(e)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
