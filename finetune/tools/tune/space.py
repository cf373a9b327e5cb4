"""The search space of ``finetune tune``: a YAML mapping from config field names to a range
(``{low, high, log, step}``) or a list of choices, validated like a recipe (an unknown key or a
value the config refuses is an error naming the key and the valid keys).

Two values follow the backbone: ``freeze_stages: {low: 0, high: all}`` (``all``: every stage
before the head) and ``freeze_until: stages`` (the first module of each of the backbone's stages).

Example:
    >>> space = load_search_space({"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "mixup": [0, 0.2]})
    >>> [p.key for p in space.params]
    ['lr', 'mixup']
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ...config import FIELD_SECTIONS, FinetuneConfig
from ...errors import ConfigError, did_you_mean, yaml_problem
from ...overrides import SELECTORS, recipes_dir

__all__ = ["Param", "SearchSpace", "load_search_space", "default_search_file"]

RANGE_KEYS = ("low", "high", "log", "step")
# fields that say where things are or how a run is kept, not how it learns
NOT_SEARCHED = {
    "path", "output", "overwrite", "log", "keep_state", "budget", "device", "image_column",
    "label_column", "weights", "save_every", "save_every_steps", "num_workers", "strict",
}  # fmt: skip
ALL_STAGES, STAGE_MODULES = "all", "stages"  # the values that follow the backbone


@dataclass(frozen=True)
class Param:
    """One searched field: ``kind`` int or float (a range) or choice (a list)."""

    key: str
    kind: str
    low: Any = None
    high: Any = None
    log: bool = False
    step: Optional[float] = None
    choices: tuple = ()


@dataclass(frozen=True)
class SearchSpace:
    """The searched fields, in file order; ``source`` names the file in errors."""

    params: tuple[Param, ...]
    source: str = "search space"

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def without(self, fixed: Sequence[str]) -> "SearchSpace":
        """The space less the fields given on the command line (fixed, not searched); a given
        freezing choice fixes them all (``freeze_until`` and ``freeze_stages`` exclude each
        other)."""
        fixed = {k.split(".")[-1] for k in fixed}
        if fixed & SELECTORS.keys():
            fixed |= SELECTORS.keys()
        return replace(self, params=tuple(p for p in self.params if p.key not in fixed))

    def get(self, key: str) -> Optional[Param]:
        return next((p for p in self.params if p.key == key), None)

    def with_stages(self, stages: Sequence[str], modules: Optional[set] = None) -> "SearchSpace":
        """``high: all`` and ``stages`` made concrete: ``stages`` are the first modules of the
        backbone's stages, the head's last; a depth beyond them, or a ``freeze_until`` choice
        not among ``modules`` (the backbone's module names), is an error naming the key.
        Regression: trials of such values failed one by one and the study ended "complete"."""
        params, most = [], len(stages) - 1
        for p in self.params:
            if p.key == "freeze_stages" and p.high == ALL_STAGES:
                p = replace(p, high=most)
            elif p.key == "freeze_until" and p.choices == (STAGE_MODULES,):
                p = replace(p, choices=tuple(stages[:-1]))
            _check_freezing(p, stages, modules)
            params.append(p)
        return replace(self, params=tuple(params))

    @property
    def needs_stages(self) -> bool:
        return any(p.high == ALL_STAGES or p.choices == (STAGE_MODULES,) for p in self.params)

    def suggest(
        self, trial, caps: Optional[Mapping[str, int]] = None, keys: Optional[set] = None
    ) -> dict[str, Any]:
        """The trial's values (Optuna's ``suggest_*``); ``caps`` lowers a range's top for this
        trial only (the budget caps ``epochs``); ``keys``: suggest only these (the rest stay as
        configured)."""
        caps = caps or {}
        values: dict[str, Any] = {}
        for p in self.params:
            if keys is not None and p.key not in keys:
                continue
            if p.kind == "choice":
                values[p.key] = trial.suggest_categorical(p.key, list(p.choices))
            elif p.kind == "int":
                high = min(p.high, caps.get(p.key, p.high))
                values[p.key] = trial.suggest_int(
                    p.key, p.low, high, step=int(p.step or 1), log=p.log
                )
            else:
                values[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
        return values

    def start_point(self, cfg: FinetuneConfig) -> dict[str, Any]:
        """The base config's own values that lie in the space: the first trial of a new study
        (the default run) records them as its parameters; fields that are None ("auto": the
        run's automatic choice) or outside the space are not suggested at all in that trial,
        so it runs exactly the base config."""
        flat = {f.name: getattr(getattr(cfg, s), f.name)
                for s in FIELD_SECTIONS.values() for f in fields(getattr(cfg, s))}  # fmt: skip
        start = {}
        for p in self.params:
            value = flat[p.key]
            if p.kind == "choice" and value in p.choices:
                start[p.key] = value
            elif p.kind != "choice" and value is not None and p.low <= value <= p.high:
                start[p.key] = value
        return start


def default_search_file() -> Path:
    """The shipped default space: ``recipes/search/default.yaml``."""
    return recipes_dir() / "search" / "default.yaml"


def load_search_space(source: str | Path | Mapping | None = None) -> SearchSpace:
    """A search space from a YAML file, a name in ``recipes/search`` (``default``), or a mapping.

    Example:
        >>> load_search_space().keys[:2]  # the shipped default  # doctest: +SKIP
        ['lr', 'freeze_stages']
    """
    import yaml

    if source is None:
        source = default_search_file()
    if isinstance(source, Mapping):
        data, name = source, "search space"
    else:
        path = Path(source)
        if not path.is_file():
            candidate = recipes_dir() / "search" / f"{source}.yaml"
            if not candidate.is_file():
                names = sorted(p.stem for p in (recipes_dir() / "search").glob("*.yaml"))
                raise FileNotFoundError(
                    f"search space '{source}' not found: not a file and not one of "
                    f"{', '.join(names) or '(none installed)'}"
                )
            path = candidate
        try:
            data, name = yaml.safe_load(path.read_text()) or {}, str(path)
        except (yaml.YAMLError, UnicodeDecodeError) as e:  # not UTF-8: was a traceback
            raise ConfigError(f"{path}: not valid YAML ({yaml_problem(e)})") from None
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"{name}: expected a mapping of config fields to ranges or choices")
    params = tuple(_param(name, str(key), value) for key, value in data.items())
    if {"freeze_until", "freeze_stages"} <= {p.key for p in params}:
        raise ConfigError(f"{name}: search freeze_until or freeze_stages, not both (each one "
                          "chooses what to freeze)")  # fmt: skip
    return SearchSpace(params, name)


def _searchable() -> list[str]:
    return [k for k in FIELD_SECTIONS if k not in NOT_SEARCHED and _field_type(k) is not None]


def _field_type(key: str):
    """The field's type with Optional removed: int, float, bool, str (or None: not searchable)."""
    section = FIELD_SECTIONS[key]
    section_cls = next(f.default_factory for f in fields(FinetuneConfig) if f.name == section)
    hint = typing.get_type_hints(section_cls)[key]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint
    return base if base in (int, float, bool, str) else None


def _param(source: str, key: str, value: Any) -> Param:
    name = key.split(".")[-1]
    valid = _searchable()
    if name not in valid:
        hint = did_you_mean(name, valid)
        raise ConfigError(
            f"{source}: '{key}' cannot be searched.{hint} Valid keys: {', '.join(valid)}"
        )
    where = f"{source}: {name}"
    if name == "freeze_until" and value == STAGE_MODULES:
        return Param(name, "choice", choices=(STAGE_MODULES,))
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: an empty list of choices")
        for choice in value:
            _check_value(where, name, choice)
        return Param(name, "choice", choices=tuple(value))
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: write a range {{low: A, high: B}} (log: true, step: S) or "
                          f"a list of choices, not {value!r}")  # fmt: skip
    return _range(where, name, value)


def _range(where: str, name: str, value: Mapping) -> Param:
    unknown = [k for k in value if k not in RANGE_KEYS]
    if unknown or "low" not in value or "high" not in value:
        what = f"unknown key '{unknown[0]}'" if unknown else "a range needs low and high"
        raise ConfigError(f"{where}: {what}; a range takes {', '.join(RANGE_KEYS)}")
    kind = _field_type(name)
    if kind not in (int, float):
        raise ConfigError(f"{where}: a {kind.__name__} field takes a list of choices, not a range")
    low, high = value["low"], value["high"]
    if name == "freeze_stages" and high == ALL_STAGES:
        _check_value(where, name, low)
        return Param(name, "int", low=int(low), high=ALL_STAGES)
    for bound in (low, high):
        _check_value(where, name, bound)
        if kind is int and (isinstance(bound, bool) or not isinstance(bound, int)):
            raise ConfigError(f"{where}: {name} is a whole number; low and high must be too")
    log, step = bool(value.get("log", False)), value.get("step")
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if log and (low <= 0 or step is not None):
        raise ConfigError(f"{where}: a log range needs low > 0 and no step")
    typed = int if kind is int else float
    return Param(name, kind.__name__, low=typed(low), high=typed(high), log=log, step=step)


def _check_value(where: str, name: str, value: Any) -> None:
    """The config's own check (type, range, choices) of one value of the space."""
    try:
        FinetuneConfig().with_overrides(**{name: value})
    except ConfigError as e:
        raise ConfigError(f"{where}: {value!r} is not a valid value ({e})") from None


def _check_freezing(p: Param, stages: Sequence[str], modules: Optional[set]) -> None:
    """A searched freezing value the backbone cannot take: a depth beyond its stages, a module
    it lacks."""
    most = len(stages) - 1
    depths = [v for v in (p.choices or (p.low, p.high)) if isinstance(v, int)]
    if p.key == "freeze_stages" and depths and max(depths) > most:
        raise ConfigError(f"freeze_stages: {max(depths)} is beyond the backbone's {most} "
                          f"stages; use 0 to {most}, or high: all")  # fmt: skip
    unknown = [c for c in p.choices if c not in (modules or ())]
    if p.key == "freeze_until" and modules is not None and unknown:
        raise ConfigError(f"freeze_until: {unknown[0]!r} is not a module of the backbone; its "
                          f"stages begin at {', '.join(stages[:-1])} (freeze_until: stages, alone, searches those)")  # fmt: skip
