"""Validation of a config's values: types, ranges, choices and options that cannot go together.

Every ``FinetuneConfig`` is checked when it is made, so a bad value fails before any work with a
message that names the key (``optim.lr must be > 0``) and the choices or the fix.

Example:
    >>> from finetune.config import FinetuneConfig
    >>> FinetuneConfig().with_overrides(bn="nope")
    Traceback (most recent call last):
    ...
    finetune.errors.ConfigError: policy.bn: 'nope' is not one of frozen, eval-all, train
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import FinetuneConfig

__all__ = [
    "CHOICES",
    "check_config",
    "check_output_outside_data",
    "coerce",
    "parse_duration",
]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | float | int, key: str = "train.budget") -> float:
    """Seconds in a duration: ``"90s"``, ``"5m"``, ``"1.5h"``, ``"1h30m"`` or a plain number of
    seconds. A bad value is a ``ConfigError`` naming ``key``.

    Example:
        >>> parse_duration("1h30m"), parse_duration("90s"), parse_duration(45)
        (5400.0, 90.0, 45.0)
    """
    import re

    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        body = str(text).strip().lower()
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smh]?)", body)
        if not body or re.sub(r"(\d+(?:\.\d+)?)\s*([smh]?)", "", body).strip():
            parts = []
        seconds = sum(float(n) * _UNITS[u or "s"] for n, u in parts) if parts else -1.0
    if seconds == 0:
        raise ConfigError(f"{key}: '{text}' is no time; give more than 0 (e.g. 90s, 5m, 2h)")
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"{key}: '{text}' is not a duration; write it like 90s, 5m, 2h or 1h30m")
    return seconds


CHOICES: dict[str, tuple[str, ...]] = {
    "policy.bn": ("frozen", "eval-all", "train"),
    "data.class_weights": ("none", "auto"),
    "data.sampler": ("none", "balanced"),
    "data.cache_images": ("auto", "memory", "disk", "none"),
    "data.scan": ("auto", "full", "quick", "off"),
    "head.head_init": ("auto", "probe", "random"),
    "adapter.peft": ("none", "lora", "loha", "lokr", "ia3"),
    "optim.optimizer": ("adamw", "sgd"),
    "optim.schedule": ("cosine", "step", "exponential"),
    "train.nan_policy": ("stop", "skip-batch"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "output.log": ("tensorboard", "wandb", "mlflow"),
}


def check_config(cfg: "FinetuneConfig") -> None:
    """Raise ``ConfigError`` naming the key for a value out of range or a choice not offered,
    and for options that cannot go together."""
    _check_finite(cfg)
    for dotted, choices in CHOICES.items():
        section, name = dotted.split(".")
        value = getattr(getattr(cfg, section), name)
        if isinstance(value, tuple):  # several of the choices
            bad = [v for v in value if v not in choices]
            if bad:
                raise ConfigError(f"{dotted}: '{bad[0]}' is not one of {', '.join(choices)}")
            continue
        if value not in choices:
            raise ConfigError(f"{dotted}: '{value}' is not one of {', '.join(choices)}")
    checks = [
        ("data.val_split", 0.0 <= cfg.data.val_split < 1.0, "must be in [0, 1)"),
        ("data.batch_size", cfg.data.batch_size >= 1, "must be >= 1"),
        (
            "data.min_crop_scale",
            cfg.data.min_crop_scale is None or 0 < cfg.data.min_crop_scale <= 1,
            "must be in (0, 1]",
        ),
        ("data.hflip", 0 <= cfg.data.hflip <= 1, "must be a probability in [0, 1]"),
        ("data.vflip", 0 <= cfg.data.vflip <= 1, "must be a probability in [0, 1]"),
        ("data.color_jitter", (cfg.data.color_jitter or 0) >= 0, "must be >= 0"),
        ("data.hue_jitter", 0 <= cfg.data.hue_jitter <= 0.5, "must be in [0, 0.5]"),
        ("data.rotate", 0 <= cfg.data.rotate <= 180, "must be in [0, 180] degrees"),
        ("data.random_erasing", 0 <= cfg.data.random_erasing <= 1, "must be in [0, 1]"),
        (
            "data.auto_augment",
            cfg.data.auto_augment is None
            or cfg.data.auto_augment.startswith(
                ("rand", "augmix", "original", "v0", "3a", "trivialaugment")
            ),
            "must be a timm policy (rand-..., augmix-..., original, v0, 3a) or trivialaugment",
        ),
        ("data.img_size", cfg.data.img_size is None or cfg.data.img_size >= 16, "must be >= 16 px"),
        ("data.in_chans", cfg.data.in_chans is None or cfg.data.in_chans >= 1, "must be >= 1"),
        ("optim.lr", cfg.optim.lr is None or cfg.optim.lr > 0, "must be > 0"),
        ("optim.weight_decay", cfg.optim.weight_decay >= 0, "must be >= 0"),
        ("optim.warmup_epochs", (cfg.optim.warmup_epochs or 0) >= 0, "must be >= 0"),
        ("optim.min_lr_ratio", 0 <= cfg.optim.min_lr_ratio <= 1, "must be in [0, 1]"),
        ("optim.label_smoothing", 0 <= cfg.optim.label_smoothing < 1, "must be in [0, 1)"),
        ("head.head_dropout", 0 <= cfg.head.head_dropout < 1, "must be in [0, 1)"),
        ("train.epochs", cfg.train.epochs >= 1, "must be >= 1"),
    ]
    if cfg.train.budget is not None:
        parse_duration(cfg.train.budget)
    p = cfg.policy
    checks += [
        ("policy.freeze_stages", (p.freeze_stages or 0) >= 0, "must be >= 0"),
        ("policy.unfreeze_every", p.unfreeze_every >= 0, "must be >= 0"),
        (
            "policy.unfreeze_at",
            all(e >= 2 for e in p.unfreeze_at),
            "epochs must be >= 2 (epoch 1 starts with the initial plan)",
        ),
        (
            "optim.layer_decay",
            cfg.optim.layer_decay is None or 0 < cfg.optim.layer_decay <= 1,
            "must be in (0, 1]",
        ),
        ("optim.head_lr_scale", cfg.optim.head_lr_scale > 0, "must be > 0"),
        ("adapter.lora_r", cfg.adapter.lora_r >= 1, "must be >= 1"),
        ("optim.accum_steps", cfg.optim.accum_steps >= 1, "must be >= 1"),
        ("optim.clip_grad", cfg.optim.clip_grad is None or cfg.optim.clip_grad > 0, "must be > 0"),
        ("optim.decay_rate", 0 < cfg.optim.decay_rate <= 1, "must be in (0, 1]"),
        ("optim.step_epochs", cfg.optim.step_epochs > 0, "must be > 0"),
        ("train.mixup", cfg.train.mixup >= 0 and cfg.train.cutmix >= 0, "alphas must be >= 0"),
        ("train.mixup_off_epochs", cfg.train.mixup_off_epochs >= 0, "must be >= 0"),
        ("train.ema_decay", 0 < cfg.train.ema_decay < 1, "must be in (0, 1)"),
        ("train.distill", 0 <= cfg.train.distill <= 1, "must be in [0, 1]"),
        ("train.patience", cfg.train.patience >= 0, "must be >= 0"),
        ("train.save_every", cfg.train.save_every >= 1, "must be >= 1"),
        ("train.save_every_steps", cfg.train.save_every_steps >= 0, "must be >= 0"),
        ("backbone.drop_path", 0 <= cfg.backbone.drop_path < 1, "must be in [0, 1)"),
    ]
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"{key} {why}")
    _check_combinations(cfg)


def check_output_outside_data(output, data, flag: str = "--output") -> None:
    """An output folder inside the image folder would be read as a class of images by the next
    scan (its PNG plots are images). Regression: a run or study written into --data made the
    next run train on a class named after it, without a word."""
    from pathlib import Path

    if not output or not data or not Path(str(data)).expanduser().is_dir():
        return
    out, root = (Path(str(p)).expanduser().resolve() for p in (output, data))
    if out.is_relative_to(root):
        raise ConfigError(f"{flag} {out} is inside --data {root}: the next scan would read its "
                          "files as a class of images; choose a folder outside it")  # fmt: skip


def _check_combinations(cfg: "FinetuneConfig") -> None:
    """Options that cannot go together fail naming both."""
    p = cfg.policy
    selectors = [
        name
        for name, on in (
            ("freeze_until", p.freeze_until is not None),
            ("freeze_stages", (p.freeze_stages or 0) > 0),
            ("linear_probe", p.linear_probe),
            ("train_only", p.train_only is not None),
            ("full", p.full),
        )
        if on
    ]
    if len(selectors) > 1:
        raise ConfigError(f"policy: {' and '.join(selectors)} both say what to freeze; keep one")
    if p.full and p.freeze is not None:
        raise ConfigError("policy: full trains everything, so freeze cannot apply; keep one")
    if cfg.adapter.peft != "none" and (selectors or p.freeze is not None):
        raise ConfigError(
            f"adapter.peft={cfg.adapter.peft} freezes the backbone itself and trains "
            f"the adapters and the head; drop {(selectors or ['freeze'])[0]}"
        )
    unfreezing = p.unfreeze_every > 0 or bool(p.unfreeze_at)
    if p.unfreeze_every > 0 and p.unfreeze_at:
        raise ConfigError("policy: unfreeze_every and unfreeze_at are two schedules; keep one")
    if unfreezing and not {"freeze_until", "freeze_stages", "linear_probe"} & set(selectors):
        raise ConfigError(
            "policy: gradual unfreezing needs a frozen start: add freeze_until, "
            "freeze_stages or linear_probe"
        )
    if unfreezing and p.freeze is not None:
        raise ConfigError(
            "policy: gradual unfreezing would thaw what freeze pins; use "
            "train_only or freeze_stages for the start instead of freeze"
        )
    if cfg.train.cache_features and (not p.linear_probe or unfreezing):
        raise ConfigError(
            "train.cache_features needs linear_probe without gradual unfreezing "
            "(features are only fixed while the whole backbone is frozen)"
        )
    if (cfg.train.mixup or cfg.train.cutmix) and cfg.data.batch_size % 2:
        raise ConfigError(
            f"train.mixup/cutmix pair each batch with its reverse: data.batch_size "
            f"must be even (got {cfg.data.batch_size})"
        )
    if (cfg.train.mixup or cfg.train.cutmix) and cfg.train.teacher:
        raise ConfigError(
            "train.teacher gives soft targets, which timm's Mixup cannot mix: set train.mixup "
            "and train.cutmix to 0, or drop the teacher"
        )
    if (cfg.train.mixup or cfg.train.cutmix) and cfg.train.cache_features:
        raise ConfigError(
            "train.mixup/cutmix mix images; cached features cannot be mixed: drop cache_features"
        )
    if cfg.train.cache_features and (p.bn == "train" or cfg.head.head_dropout > 0):
        raise ConfigError(
            "train.cache_features computes features once in eval mode; drop "
            + ("bn=train" if p.bn == "train" else "head_dropout")
        )
    adapter = cfg.adapter
    if adapter.peft != "none" and p.bn == "train":
        raise ConfigError(
            "adapter.peft saves adapters and the head, not BatchNorm statistics; "
            "use bn=frozen or eval-all with an adapter"
        )
    defaults = type(adapter)()
    changed = [
        k
        for k in ("lora_r", "lora_alpha", "lora_dropout", "lora_targets")
        if getattr(adapter, k) != getattr(defaults, k)
    ]
    if adapter.peft == "none" and changed:
        raise ConfigError(
            f"adapter.{changed[0]} is set but adapter.peft is none; add "
            "--peft lora (or loha, lokr, ia3)"
        )


def _check_finite(cfg: "FinetuneConfig") -> None:
    # regression: --lr inf passed every range check ("> 0") and trained a NaN model
    for section in dataclasses.fields(cfg):
        values = getattr(cfg, section.name)
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{section.name}.{f.name} must be a finite number, got {value}")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against a field type; ints are accepted for floats, nothing else casts."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple:  # tuple[int, ...]: a YAML list or "3,6"
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        if isinstance(value, (list, tuple)):
            try:
                cast = int if args[0] is int else args[0]  # "3,6" -> (3, 6); "a,b" -> ("a", "b")
                return tuple(
                    coerce(cast(v) if isinstance(v, str) else v, args[0], key) for v in value
                )
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a list of {args[0].__name__}, got {value!r}")
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" as a string
            return float(value)
        except ValueError:
            pass
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
