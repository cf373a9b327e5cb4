"""The first searched trials of a study: neighbours of the best config so far, not random points
of the whole space. Optuna's TPE samples its first ``STARTUP_TRIALS`` at random, and a budgeted
study has room for only one or two searched trials (its shares: a quarter for the default run, a
quarter for the search, half for the final trial), so a random point was all the search ever
tried: the 62 searched trials of the bench's 36 studies (docs/benchmarks.md) all scored below
the default run on validation, by 0.5 to 25 points, 7.7 in the median (an LR of 1e-4 with 4
stages frozen, or 3.5e-3 with none, where the default run had chosen 2e-3 and 4). Ultralytics'
tuner starts the same way: it mutates the best result so far. A neighbour keeps the best
trial's values as its run resolved them (the automatic choices included: its ``config.json``)
and moves about half of them by a fraction of their range; TPE takes over from
``STARTUP_TRIALS`` on, with the neighbours as its history.

Example:
    >>> import random
    >>> space = load_search_space({"lr": {"low": 1e-4, "high": 1e-2, "log": True}})
    >>> moved = neighbour(space, {"lr": 2e-3}, rng=random.Random(0))
    >>> 1e-4 <= moved["lr"] <= 1e-2 and moved["lr"] != 2e-3
    True
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Mapping, Optional

from ..._io import read_run_config
from ...config import FIELD_SECTIONS
from .space import Param, SearchSpace

__all__ = ["STARTUP_TRIALS", "SIGMA", "propose", "neighbour", "resolved_values"]

STARTUP_TRIALS = 5  # TPE's start-up trials (study.py): neighbours until the study has this many
# a move's standard deviation, as a fraction of the range's width (of log(high/low) for a log
# range): an LR about 2x up or down (1e-4..1e-2), one stage of freezing more or less (0..8),
# 0.14 of crop scale (0.08..1)
SIGMA = 0.15
MOVE_P = 0.5  # each value moves with this probability; at least one always does


def propose(space: SearchSpace, best, *, seed: str, caps: Mapping[str, int]):
    """``(params, moved)``: a neighbour of the finished Optuna trial ``best`` and the fields it
    moved. It starts from the values its run resolved (``config.json``, the automatic choices
    included) where its run directory is on this machine and readable, else from its
    parameters. Regression: a damaged ``config.json`` stopped a resumed study."""
    values = dict(best.params)
    run_dir = best.user_attrs.get("run_dir")
    if run_dir and (Path(run_dir) / "config.json").is_file():
        try:
            saved = read_run_config(run_dir)["finetune"]["config"]
        except (ValueError, KeyError, TypeError):  # damaged: its parameters are enough
            saved = {}
        values.update(resolved_values(space, saved))
    params = neighbour(space, values, rng=random.Random(seed), caps=caps)
    return params, [k for k in params if params[k] != values.get(k)]


def resolved_values(space: SearchSpace, config: Mapping[str, Mapping[str, Any]]) -> dict:
    """The searched fields' values in a run's saved config (``config.json``'s ``finetune.config``:
    sections of fields), the run's automatic choices included; None (a choice left to a later
    stage, or off) is left out."""
    values = {}
    for p in space.params:
        value = config.get(FIELD_SECTIONS.get(p.key, ""), {}).get(p.key)
        if value is not None:
            values[p.key] = value
    return values


def neighbour(
    space: SearchSpace,
    values: Mapping[str, Any],
    *,
    rng: random.Random,
    caps: Optional[Mapping[str, int]] = None,
) -> dict[str, Any]:
    """``values`` (the searched fields of one config) with about half of them moved within the
    space; ``caps`` lowers a range's top (the budget caps ``epochs``). Fields missing from
    ``values`` stay missing; an empty dict when nothing can move.

    Example:
        >>> space = load_search_space({"mixup": [0.0, 0.2]})
        >>> neighbour(space, {"mixup": 0.0}, rng=random.Random(0))
        {'mixup': 0.2}
    """
    caps = caps or {}
    params = [p for p in space.params if p.key in values and _can_move(p)]
    if not params:
        return {}
    out: dict[str, Any] = {}
    for _ in range(10):  # a move can round back or clip to where it was: try again
        moving = {p.key for p in params if rng.random() < MOVE_P} or {rng.choice(params).key}
        for p in params:
            value = _clip(p, values[p.key], caps.get(p.key))
            out[p.key] = _move(p, value, rng, caps.get(p.key)) if p.key in moving else value
        if any(out[k] != values[k] for k in out):
            break
    return out


def _can_move(p: Param) -> bool:
    return len(p.choices) > 1 if p.kind == "choice" else True


def _move(p: Param, value: Any, rng: random.Random, cap: Optional[int]) -> Any:
    if p.kind == "choice":
        return rng.choice([c for c in p.choices if c != value] or list(p.choices))
    low, high = p.low, min(p.high, cap) if cap is not None else p.high
    if p.log:
        moved = math.exp(math.log(value) + rng.gauss(0.0, SIGMA * math.log(p.high / p.low)))
    else:
        moved = value + rng.gauss(0.0, SIGMA * (p.high - p.low))
    if p.kind == "int" or p.step:  # on a grid: at least one step, back inside the range
        unit = 1 if p.kind == "int" else p.step
        steps = round((moved - value) / unit) or rng.choice([-1, 1])
        steps = steps if low <= value + steps * unit <= high else -steps
        moved = value + steps * unit
    moved = min(max(moved, low), high)
    return (
        int(moved) if p.kind == "int" else round(float(moved), 12)
    )  # 0.1 + 0.05, not 0.15000000000000002


def _clip(p: Param, value: Any, cap: Optional[int]) -> Any:
    """A resolved value outside the space (the default run may choose beyond it) on its edge,
    and off a range's ``step`` onto its grid."""
    if p.kind == "choice":
        return value if value in p.choices else p.choices[0]
    high = min(p.high, cap) if cap is not None else p.high
    if p.step:
        value = p.low + round((value - p.low) / p.step) * p.step
    return type(p.low)(min(max(value, p.low), high))
