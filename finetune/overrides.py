"""How overrides meet a base config: the selector rule, a recipe's unfreeze epochs scaled to a
chosen run length, recipes by name, and the command-line flag of each config key.

Example:
    >>> selector_reset({"freeze_until": "layer3"})["linear_probe"]
    False
    >>> flag_name("path")
    '--data'
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from .config import FinetuneConfig

__all__ = [
    "SELECTORS",
    "selector_reset",
    "rescaled_unfreezing",
    "flag_name",
    "recipes_dir",
    "resolve_recipe",
]


SELECTORS = {
    "freeze_until": None,
    "freeze_stages": 0,
    "linear_probe": False,
    "train_only": None,
    "full": False,
}


def rescaled_unfreezing(base: "FinetuneConfig", overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A recipe's ``unfreeze_at`` epochs scaled to a run length the user chose (``--epochs``):
    regression: ``--recipe medical-xray --epochs 1`` failed naming ``--unfreeze-at 3``, a flag
    the user never passed. Epochs past the new end are dropped."""
    epochs = overrides.get("epochs", overrides.get("train.epochs"))
    at = base.policy.unfreeze_at
    if epochs is None or not at or {"unfreeze_at", "policy.unfreeze_at"} & overrides.keys():
        return {}
    old, new = base.train.epochs, int(epochs)
    scaled = sorted({max(2, round(e * new / old)) for e in at})
    return {"unfreeze_at": tuple(e for e in scaled if e <= new)}


# config fields whose command-line flag is not simply --field-name
FLAG_NAMES = {"path": "--data", "name": "--backbone", "pretrained": "--no-pretrained"}


def flag_name(key: str) -> str:
    """The command-line flag of a config key: ``lr`` -> ``--lr``, ``path`` -> ``--data``."""
    name = key.split(".")[-1]
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def selector_reset(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """When ``overrides`` choose what to freeze, the base config's own choice (and what only
    made sense with it: its unfreeze schedule, cached features) is reset, so an override
    replaces a recipe's policy instead of conflicting with it. An override that turns a
    selector off (``--no-linear-probe``) chooses nothing and resets nothing."""
    if not any(k in overrides and overrides[k] != off for k, off in SELECTORS.items()):
        return {}
    reset = {k: v for k, v in SELECTORS.items() if k not in overrides}
    reset.update(
        {
            k: v
            for k, v in (("unfreeze_every", 0), ("unfreeze_at", ()), ("cache_features", False))
            if k not in overrides
        }
    )
    return reset


def recipes_dir() -> Path:
    """The shipped recipes: ``recipes/`` of the repository, installed as ``finetune.recipes``."""
    from importlib import resources

    try:
        return Path(str(resources.files("finetune.recipes")))
    except ModuleNotFoundError:  # running from a source tree that is not installed
        return Path(__file__).resolve().parent.parent / "recipes"


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A recipe file path, or the name of a shipped recipe (``default`` -> default.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = recipes_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    names = sorted(p.stem for p in recipes_dir().glob("*.yaml"))
    raise FileNotFoundError(
        f"recipe '{name_or_path}' not found: not a file and not one of "
        f"{', '.join(names) or '(no recipes installed)'}"
    )
