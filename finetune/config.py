"""Frozen configuration dataclasses: the single source of truth for a run.

A config has one section per part of the pipeline. Recipe YAML files use the same section and
field names; CLI flags and ``adapt(**overrides)`` use the field names alone (they are unique
across sections) or ``section.field``. Unknown keys and wrong types are errors that name the key.

Example:
    >>> cfg = FinetuneConfig().with_overrides(lr=3e-4, epochs=2, freeze_until="layer3")
    >>> cfg.optim.lr, cfg.policy.freeze_until
    (0.0003, 'layer3')
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Optional

from ._io import CONFIG_NAME, read_run_config
from .errors import ConfigError, did_you_mean, yaml_problem
from .overrides import flag_name, recipes_dir, rescaled_unfreezing, resolve_recipe, selector_reset
from .validation import CHOICES, check_config, coerce

__all__ = [
    "BackboneConfig",
    "DataConfig",
    "HeadConfig",
    "PolicyConfig",
    "AdapterConfig",
    "OptimConfig",
    "TrainConfig",
    "OutputConfig",
    "FinetuneConfig",
    "ConfigError",
    "CHOICES",
    "flag_name",
    "selector_reset",
    "recipes_dir",
    "resolve_recipe",
]


@dataclass(frozen=True)
class BackboneConfig:
    """Which backbone and which pretrained weights."""

    # timm name, "hf-hub:ORG/NAME" or "tv:NAME" (torchvision)
    name: str = "tf_efficientnet_lite0"
    # an explicit weight file (.safetensors, .pth, .pt, .bin); wins over every other source
    weights: Optional[str] = None
    # False trains from random init on purpose
    pretrained: bool = True
    # stochastic depth of timm backbones (probability at the last block)
    drop_path: float = 0.0


@dataclass(frozen=True)
class HeadConfig:
    """The new classifier head."""

    # dropout before the new classifier (probability)
    head_dropout: float = 0.0
    # how the new head starts: probe = fitted on frozen features before fine-tuning (LP-FT,
    # Kumar et al. 2022: a random head distorts the pretrained features), random, or auto
    # (probe when the backbone is pretrained and more than the head trains)
    head_init: str = "auto"


@dataclass(frozen=True)
class DataConfig:
    """Where the images are, how they are read, split, cached, balanced and augmented."""

    path: Optional[str] = None
    # square input size in pixels; None = the backbone's pretrained input size
    img_size: Optional[int] = None
    # input channels: None = RGB; N = multi-band images (4- or 13-band satellite TIFFs) read as
    # N channels, the pretrained first conv adapted (RGB filters repeated and rescaled, timm's
    # in_chans way)
    in_chans: Optional[int] = None
    # fraction of each class held out for validation when the folder has no val/ split
    val_split: float = 0.2
    # the validation images train too (a refit once the config is chosen: finetune tune's final
    # trial, sklearn's refit=True); no validation score then, and the last epoch is kept
    train_on_val: bool = False
    batch_size: int = 32
    # DataLoader worker processes; -1 = choose from the machine's cores
    num_workers: int = -1
    # fail on the first bad or suspicious image instead of skipping it with a warning
    strict: bool = False
    # images with more pixels are treated as decompression bombs and skipped
    max_pixels: int = 89_478_485
    # class imbalance: "auto" weighs the loss by inverse class frequency
    class_weights: str = "none"
    # "balanced" draws training images with a class-balanced weighted sampler
    sampler: str = "none"
    # decoded images kept between epochs: auto (memory if it fits, else a disk file), memory,
    # disk, none
    cache_images: str = "auto"
    # the bad-file scan before training: full (decode every image), quick (headers and sizes
    # only; a file that fails to decode later is skipped and reported), off, or auto
    scan: str = "auto"
    # training augmentation (timm create_transform): random resized crop keeps this fraction of
    # the image area at least (0.08 = ImageNet's 300-epoch recipe; raise it when small details
    # carry the label), flip probabilities, colour jitter strength (0 = off). None = chosen from
    # the run length (finetune.autoconfig: short fine-tunes get milder crops and jitter)
    min_crop_scale: Optional[float] = None
    hflip: float = 0.5
    vflip: float = 0.0
    color_jitter: Optional[float] = None
    # hue jitter (0-0.5; stain/colour variation in pathology), 0 = off
    hue_jitter: float = 0.0
    # random rotation range in degrees (+-), before the crop
    rotate: float = 0.0
    # all 8 rotations/mirrors of the square (no natural orientation: satellite, slides)
    dihedral: bool = False
    # None, a timm policy ("rand-m9-mstd0.5-inc1", "augmix-m5-w4-d2", "original") or
    # "trivialaugment"; replaces colour jitter
    auto_augment: Optional[str] = None
    # random erasing probability (timm RandomErasing)
    random_erasing: float = 0.0
    # Hugging Face data sets (--data hf:...): the image and label columns; None = the first
    # Image / ClassLabel feature
    image_column: Optional[str] = None
    label_column: Optional[str] = None


@dataclass(frozen=True)
class PolicyConfig:
    """What trains and what is frozen, BatchNorm modes, gradual unfreezing."""

    # What to freeze: at most one of freeze_until / freeze_stages / linear_probe / train_only /
    # full; `freeze` adds frozen parameters to any of them but full. The head always trains.
    # first module that trains; everything before it in forward order is frozen
    freeze_until: Optional[str] = None
    # freeze the first N stages (stem, stage 1, ...; `finetune inspect` lists them); None =
    # auto: 0, except that a budgeted run of a pretrained CNN with no other freezing choice
    # freezes its leading stages holding <= 2 % of the weights (finetune.train.autofreeze)
    freeze_stages: Optional[int] = None
    # freeze everything but the head
    linear_probe: bool = False
    # regex over parameter names: only matching parameters (and the head) train
    train_only: Optional[str] = None
    # regex over parameter names: matching parameters are frozen
    freeze: Optional[str] = None
    # train every parameter
    full: bool = False
    # frozen: BatchNorm of frozen layers keeps its statistics (eval mode); eval-all: every
    # BatchNorm layer keeps its statistics; train: every BatchNorm layer updates them
    bn: str = "frozen"
    # gradual unfreezing: one more stage (from the top) every N epochs, or at these epochs (1-based)
    unfreeze_every: int = 0
    unfreeze_at: tuple[int, ...] = ()


@dataclass(frozen=True)
class AdapterConfig:
    """Parameter-efficient fine-tuning (peft adapters)."""

    # parameter-efficient fine-tuning through peft: none, lora, loha, lokr or ia3
    peft: str = "none"
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    # regex over module names to adapt; None = the family default (finetune inspect shows it)
    lora_targets: Optional[str] = None


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer, learning-rate layout and schedule, loss options."""

    optimizer: str = "adamw"
    # peak learning rate, reached after warmup; None = by optimizer and architecture
    # (finetune.autoconfig: AdamW 2e-3 for CNNs, 5e-4 for transformers; SGD 10x)
    lr: Optional[float] = None
    weight_decay: float = 0.05
    # SGD momentum (ignored by AdamW)
    momentum: float = 0.9
    # linear warmup length; None = 5 % of the run, at most one epoch (finetune.autoconfig)
    warmup_epochs: Optional[float] = None
    # final LR of the cosine schedule as a fraction of lr
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.1
    # layer-wise LR decay over the stages (BEiT style): stage i of n gets lr * decay^(n-1-i);
    # None = off
    layer_decay: Optional[float] = None
    # LR multiplier of the head
    head_lr_scale: float = 1.0
    # LR schedule after warmup: cosine; step (x decay_rate every step_epochs); exponential
    # (x decay_rate every epoch: lr 0.01 with decay_rate 0.905 is 0.01 * exp(-epoch / 10))
    schedule: str = "cosine"
    step_epochs: float = 30.0
    decay_rate: float = 0.1
    # gradient clipping (max global L2 norm); None = off
    clip_grad: Optional[float] = None
    # gradient accumulation: optimizer step every N batches (effective batch = N x batch_size)
    accum_steps: int = 1


@dataclass(frozen=True)
class TrainConfig:
    """Run length, device and precision, regularisers, stopping and saving."""

    epochs: int = 10
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    # channels_last memory format for CNNs (25-65 % faster CPU steps measured here)
    channels_last: bool = True
    # linear probe only: compute backbone features once and train the head on them
    cache_features: bool = False
    # mixup / cutmix alpha (timm Mixup; 0 = off), switched off for the last N epochs
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_off_epochs: int = 0
    # exponential moving average of the weights (timm ModelEmaV3), evaluated and saved apart;
    # its per-step decay warms up as 1 - (1 + step)^-3/4 to at most ema_decay
    ema: bool = False
    ema_decay: float = 0.999
    # stop when the validation score has not improved for this many epochs; 0 = off
    patience: int = 0
    # a non-finite loss: stop (keeping the best checkpoint) or skip-batch
    nan_policy: str = "stop"
    # write the resumable state every N epochs (and at the end)
    save_every: int = 1
    # also every N optimizer steps inside an epoch (long epochs); 0 = off
    save_every_steps: int = 0
    # deterministic kernels (torch.use_deterministic_algorithms): bit-identical reruns, slower
    deterministic: bool = False
    # torch.compile the model (costs ~66 s before the first step; no CPU speed-up measured here)
    compile: bool = False
    # several processes (torchrun): synchronise BatchNorm statistics across them (CUDA only)
    sync_bn: bool = False
    # wall-clock budget for training ("90s", "5m", "2h"): the epochs and the LR schedule are
    # planned from the measured speed to end within it; None = train.epochs
    budget: Optional[str] = None
    # knowledge distillation: a finished run of the same classes whose probabilities on each
    # training image (scored once at the start) are mixed into the targets, with this weight
    teacher: Optional[str] = None
    distill: float = 0.5


@dataclass(frozen=True)
class OutputConfig:
    """Where the run directory goes."""

    # run directory; None = runs/<backbone>-<timestamp>
    output: Optional[str] = None
    overwrite: bool = False
    # experiment loggers besides metrics.jsonl/metrics.csv: tensorboard, wandb, mlflow
    log: tuple[str, ...] = ()
    # keep trainer_state.pt and last.safetensors (what --resume needs) after a finished run
    keep_state: bool = True


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything a run needs; see the module docstring for how to build one."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    data: DataConfig = field(default_factory=DataConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self):
        check_config(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> "FinetuneConfig":
        """Build from nested ``{section: {field: value}}``; unknown keys/wrong types raise."""
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{source}: expected a mapping of sections, got {type(data).__name__}"
            )
        sections = {f.name: f for f in fields(cls)}
        kwargs = {}
        for name, values in data.items():
            if name not in sections:
                raise ConfigError(_unknown(source, name, sections))
            section_cls = sections[name].default_factory
            if values is None:
                values = {}
            if not isinstance(values, Mapping):
                raise ConfigError(f"{source}: section '{name}' must be a mapping of fields")
            kwargs[name] = _build_section(section_cls, values, f"{source}: {name}")
        try:
            return cls(**kwargs)
        except ConfigError as e:  # a range or combination check: name the file it came from
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "FinetuneConfig":
        """Load a recipe file, or a shipped recipe by name.

        Example: ``FinetuneConfig.from_yaml("my-recipe.yaml")``, ``from_yaml("default")``.
        """
        import yaml

        path = resolve_recipe(path)  # a file, or the name of a shipped recipe
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:  # not UTF-8: was a traceback
            raise ConfigError(f"{path}: not valid YAML ({yaml_problem(e)})") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_recipe(cls, name_or_path: str | Path) -> "FinetuneConfig":
        """Load a recipe by file path or by name from the shipped recipes (``default``)."""
        return cls.from_yaml(name_or_path)

    @classmethod
    def resolve(
        cls,
        *,
        recipe: Optional[str | Path] = None,
        resume: Optional[str | Path] = None,
        base: Optional["FinetuneConfig"] = None,
        **overrides: Any,
    ) -> "FinetuneConfig":
        """The one way a run's config is made, used by every entry point (CLI, ``adapt``,
        ``lr_find``, ``augment_preview``, ``inspect``).

        ``resume``: the config saved in that run directory, exactly (no recipe, no overrides:
        the schedule, data order and unfreeze plan were fixed by it), except ``path`` when the
        same data moved and ``epochs`` to extend a run. Otherwise ``base`` (or the
        recipe, or the defaults) with ``overrides`` applied; overrides that choose what to freeze
        replace the base's own choice (``selector_reset``).

        Example:
            >>> cfg = FinetuneConfig.resolve(recipe="linear-probe", freeze_until="blocks.4")
            >>> cfg.policy.linear_probe, cfg.policy.freeze_until
            (False, 'blocks.4')
        """
        if resume is not None:
            if recipe is not None or base is not None:
                raise ConfigError("--resume continues a run with its own config; drop --recipe")
            # the same data at a new place (checked against the run's data fingerprint), and a
            # longer run (the LR schedule is re-planned over the new length): more epochs, or a
            # budgeted run's longer budget
            allowed = ("path", "data.path", "epochs", "train.epochs", "budget", "train.budget")
            moved = {k: overrides.pop(k) for k in allowed if k in overrides}
            if overrides:
                raise ConfigError(
                    "--resume continues a run exactly as it was configured; drop "
                    + ", ".join(flag_name(k) for k in sorted(overrides))
                )
            run_config = read_run_config(resume)
            saved = run_config.get("finetune") if isinstance(run_config, Mapping) else None
            if not isinstance(saved, Mapping) or not isinstance(saved.get("config"), Mapping):
                raise ConfigError(
                    f"{resume}: config.json has no finetune config; not a finetune run"
                )
            cfg = cls.from_dict(saved["config"], source=f"{resume}/{CONFIG_NAME}")
            _check_extension(cfg, moved, resume)
            return cfg.with_overrides(**moved)
        if base is None:
            base = cls.from_recipe(recipe) if recipe else cls()
        return base.with_overrides(
            **selector_reset(overrides), **rescaled_unfreezing(base, overrides), **overrides
        )

    def with_overrides(self, **overrides: Any) -> "FinetuneConfig":
        """Return a copy with fields replaced; keys are field names or ``section.field``."""
        by_section: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            section, name = _resolve_key(key)
            by_section.setdefault(section, {})[name] = value
        updates = {}
        for section, values in by_section.items():
            current = getattr(self, section)
            merged = {**dataclasses.asdict(current), **values}
            updates[section] = _build_section(type(current), merged, f"override {section}")
        return replace(self, **updates)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _section_fields() -> dict[str, str]:
    """Map each field name to its section; names are unique across sections by design."""
    index: dict[str, str] = {}
    for section in fields(FinetuneConfig):
        for f in fields(section.default_factory):
            assert f.name not in index, f"duplicate config field {f.name}"
            index[f.name] = section.name
    return index


FIELD_SECTIONS = _section_fields()


def _check_extension(cfg: FinetuneConfig, moved: Mapping[str, Any], resume) -> None:
    """A resumed run is extended by what set its length: ``--epochs``, or ``--budget`` for a
    budgeted run. Regression: ``--resume RUN --epochs 20`` of a budgeted run was accepted and
    trained nothing more (the saved plan of the budget set its length)."""
    given = {k.split(".")[-1] for k in moved}
    if cfg.train.budget is not None and "epochs" in given:
        raise ConfigError(
            f"--epochs: {resume} was planned by --budget {cfg.train.budget}, so more epochs "
            "would not extend it; give a longer --budget to extend it"
        )
    if cfg.train.budget is None and "budget" in given:
        raise ConfigError(
            f"--budget: {resume} trains a fixed {cfg.train.epochs} epochs (no --budget); give "
            "more --epochs to extend it"
        )


def _resolve_key(key: str) -> tuple[str, str]:
    if "." in key:
        section, name = key.split(".", 1)
        if FIELD_SECTIONS.get(name) == section:
            return section, name
    elif key in FIELD_SECTIONS:
        return FIELD_SECTIONS[key], key
    valid = list(FIELD_SECTIONS) + [f"{s}.{n}" for n, s in FIELD_SECTIONS.items()]
    hint = did_you_mean(key, valid)
    raise ConfigError(f"unknown config key '{key}'.{hint} Valid keys: {', '.join(FIELD_SECTIONS)}")


def _unknown(source: str, key: str, valid) -> str:
    hint = did_you_mean(key, valid)
    return f"{source}: unknown key '{key}'.{hint} Valid keys: {', '.join(valid)}"


def _build_section(section_cls, values: Mapping[str, Any], source: str):
    hints = typing.get_type_hints(section_cls)
    valid = [f.name for f in fields(section_cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(_unknown(source, key, valid))
        kwargs[key] = coerce(value, hints[key], f"{source}.{key}")
    return section_cls(**kwargs)
