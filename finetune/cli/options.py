"""The options: help text, panels, choices and defaults taken from the config dataclasses,
and the aliases that several commands share."""

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..config import CHOICES, FinetuneConfig

DATA, MODEL, POLICY, OUT = "Data", "Model", "Policy", "Output"
OPTIM, TRAIN = "Optimisation", "Training"
# The help panel of each config section.
PANELS = {
    "data": DATA,
    "backbone": MODEL,
    "head": MODEL,
    "policy": POLICY,
    "adapter": POLICY,
    "optim": OPTIM,
    "train": TRAIN,
    "output": OUT,
}
_DEFAULTS = FinetuneConfig()

# Help of the options by config key (section.field) or, for options that are no config field, name.
# Defaults are not written here: `option` shows the config's.
HELP = {
    "data.path": "Image folder (DIR/<class>/* or DIR/train|val|test/<class>/*), CSV manifest, or a Hugging Face data set: hf:PATH_OR_NAME[:split].",
    "data.image_column": "hf: data: the image column.",
    "data.label_column": "hf: data: the label column.",
    "data.val_split": "Fraction per class held out for validation when there is no val/ folder.",
    "data.train_on_val": "Train on the validation images too (a refit of a chosen config); the last epoch is kept.",
    "data.img_size": "Input size in pixels.",
    "data.in_chans": "Bands of multi-band TIFFs (e.g. 13 for Sentinel-2); the first conv adapts.",
    "data.batch_size": "Images per batch.",
    "data.num_workers": "DataLoader worker processes.",
    "data.cache_images": "Decoded images kept between epochs (auto: memory if it fits, else disk).",
    "data.class_weights": "Class imbalance: auto weighs the loss by inverse class frequency.",
    "data.sampler": "Class imbalance: balanced draws training images class-balanced.",
    "data.strict": "Fail on an unreadable or suspicious image instead of skipping it.",
    "data.max_pixels": "Images with more pixels are skipped as decompression bombs.",
    "backbone.name": "timm name, hf-hub:ID or tv:NAME (torchvision).",
    "backbone.weights": "Pretrained weight file (.safetensors, .pth/.pt/.bin read without pickle).",
    "backbone.pretrained": "--no-pretrained trains from random init on purpose.",
    "backbone.drop_path": "Stochastic depth of timm backbones, e.g. 0.1.",
    "head.head_dropout": "Dropout before the classifier.",
    "head.head_init": "New head: probe fits it on frozen features first (LP-FT), random; auto = probe for pretrained backbones, random under --budget.",
    "recipe": "Recipe YAML file or name in recipes/; flags override it.",
    "policy.freeze_until": "First module that trains (layer3, blocks.4, ...); earlier ones freeze.",
    "policy.freeze_stages": "Freeze the first N stages ('finetune inspect' lists them); default: none, but a budgeted run of a pretrained CNN freezes the leading stages that hold <= 2% of the weights.",
    "policy.linear_probe": "Freeze everything but the head.",
    "policy.train_only": "Regex over parameter names: only these (and the head) train.",
    "policy.freeze": "Regex over parameter names: freeze these too.",
    "policy.full": "Train every parameter.",
    "policy.bn": "BatchNorm statistics: kept in frozen layers, kept in all (eval-all), or updated.",
    "policy.unfreeze_every": "Gradual unfreezing: thaw one more stage every N epochs (0 = off).",
    "policy.unfreeze_at": "Gradual unfreezing: thaw one more stage at these epochs, e.g. 3,6.",
    "train.cache_features": "With --linear-probe: compute features once, train the head on them.",
    "adapter.peft": "Parameter-efficient adapter (via peft).",
    "adapter.lora_r": "Adapter rank.",
    "adapter.lora_alpha": "Adapter alpha.",
    "adapter.lora_dropout": "Adapter dropout.",
    "adapter.lora_targets": "Regex over module names to adapt.",
    "optim.lr": "Peak learning rate, reached after warmup.",
    "optim.optimizer": "Optimizer.",
    "optim.weight_decay": "Weight decay on weights, never on biases/norms.",
    "optim.momentum": "SGD momentum (Nesterov); AdamW ignores it.",
    "optim.warmup_epochs": "Linear LR warmup length in epochs (auto: 5 % of the run, at most 1).",
    "optim.schedule": "LR schedule after warmup.",
    "optim.step_epochs": "step schedule: decay every N epochs.",
    "optim.decay_rate": "step/exponential schedule: LR factor per step/epoch.",
    "optim.clip_grad": "Clip the gradient norm to this value.",
    "optim.accum_steps": "Gradient accumulation: optimizer step every N batches.",
    "optim.label_smoothing": "Cross-entropy label smoothing.",
    "optim.layer_decay": "Layer-wise LR decay per stage from the head down, e.g. 0.75.",
    "optim.head_lr_scale": "LR multiplier for the head, e.g. 10.",
    "train.epochs": "Training epochs.",
    "train.mixup": "Mixup alpha (timm Mixup), e.g. 0.2.",
    "train.cutmix": "CutMix alpha, e.g. 1.0.",
    "train.mixup_off_epochs": "No mixup/cutmix in the last N epochs.",
    "train.ema": "Keep an EMA of the weights (timm ModelEmaV3), saved as model_ema.safetensors.",
    "train.ema_decay": "EMA decay per optimizer step, reached after a warmup (1 - (1 + step)^-3/4).",
    "train.patience": "Early stopping: epochs without a better validation score (0 = off).",
    "train.nan_policy": "What a non-finite loss does.",
    "train.save_every": "Write the resumable state every N epochs.",
    "train.save_every_steps": "Also write it every N optimizer steps inside an epoch (0 = off).",
    "train.deterministic": "Deterministic kernels: bit-identical reruns (slower).",
    "nproc": "Processes on this machine (DDP via torchrun); --batch-size is per process.",
    "train.sync_bn": "With several processes on CUDA: synchronised BatchNorm.",
    "train.compile": "torch.compile the model (~1 min start-up; no CPU gain measured).",
    "train.channels_last": "channels_last memory format for CNNs (faster CPU steps).",
    "train.device": "Device to train on.",
    "train.precision": "Training precision.",
    "train.seed": "Random seed for init, split and data order.",
    "output.output": "Run directory.",
    "output.overwrite": "Replace a run already in --output (kept until the new one has saved).",
    "output.log": "Experiment loggers besides metrics.jsonl/.csv: tensorboard, wandb, mlflow (comma-separated).",
    "data.scan": "Bad-file scan: full decodes every image, quick reads headers (bad files are skipped when loaded), off; auto picks by size.",
    "train.budget": "Wall-clock budget for training (90s, 5m, 2h): epochs and LR schedule planned to end within it.",
    "train.teacher": "A finished run (same classes) to learn from as well as the labels: its probabilities on each training image are mixed into the targets (knowledge distillation).",
    "train.distill": "With --teacher: weight of the teacher's probabilities against the labels (0-1).",
    "output.keep_state": "Keep trainer_state.pt and last.safetensors (--resume) after the run.",
    "resume": "Continue RUN_DIR from its last saved state as configured (--epochs N extends it, --budget D a budgeted run; --data NEW_PATH if the same data moved).",
    "dry_run": "Print the plan (stages, what trains, LRs) and exit.",
    "debug": "Show the full traceback on errors (or set FINETUNE_DEBUG=1).",
}


def option(
    key: str, *decls: str, panel: str = "", show: Optional[str] = None, help: str = "", **kw: Any
) -> Any:
    """A typer option. ``key`` is a config field ``section.field`` (the section picks the help
    panel, a bool becomes a ``--x/--no-x`` pair, the config default is shown unless ``show``
    says it better; "" shows none) or, with ``panel``, a plain name. Help: ``HELP[key]``."""
    if "." in key:
        section, name = key.split(".")
        value = getattr(getattr(_DEFAULTS, section), name)
        panel = panel or PANELS[section]
        if isinstance(value, bool):  # the side of the pair that applies when not given
            flag = name.replace("_", "-")
            decls = decls or (f"--{flag}/--no-{flag}",)
            show = (flag if value else f"no-{flag}") if show is None else show
            kw.setdefault("metavar", "")  # a switch takes no value: no <bool> placeholder
        elif value is not None and value != ():
            show = str(value) if show is None else show
    if show:
        kw["show_default"] = show
    return typer.Option(*decls, help=help or HELP[key], rich_help_panel=panel, **kw)


def choices(key: str) -> type[Enum]:
    """The choices of config field ``key`` as a str Enum: --help lists them, typer checks them."""
    name = key.split(".")[1].title().replace("_", "") + "Choice"
    return Enum(name, {c: c for c in CHOICES[key]}, type=str)


BnChoice = choices("policy.bn")
PeftChoice = choices("adapter.peft")
OptimizerChoice = choices("optim.optimizer")
ScheduleChoice = choices("optim.schedule")
CacheImagesChoice = choices("data.cache_images")
ScanChoice = choices("data.scan")
HeadInitChoice = choices("head.head_init")
ClassWeightsChoice = choices("data.class_weights")
SamplerChoice = choices("data.sampler")
NanPolicyChoice = choices("train.nan_policy")
DeviceChoice = choices("train.device")
PrecisionChoice = choices("train.precision")

# Options of several commands; None means "not given": the recipe's or the default value applies.
ImgSize = Annotated[Optional[int], option("data.img_size", show="the backbone's pretrained size")]
BatchSize = Annotated[Optional[int], option("data.batch_size")]
Backbone = Annotated[Optional[str], option("backbone.name")]
Weights = Annotated[Optional[Path], option("backbone.weights")]
Pretrained = Annotated[Optional[bool], option("backbone.pretrained")]
Recipe = Annotated[Optional[str], option("recipe", panel=MODEL)]
FreezeUntil = Annotated[Optional[str], option("policy.freeze_until")]
FreezeStages = Annotated[Optional[int], option("policy.freeze_stages")]
LinearProbe = Annotated[Optional[bool], option("policy.linear_probe")]
TrainOnly = Annotated[Optional[str], option("policy.train_only")]
Freeze = Annotated[Optional[str], option("policy.freeze")]
Full = Annotated[Optional[bool], option("policy.full")]
Bn = Annotated[Optional[BnChoice], option("policy.bn")]
Peft = Annotated[Optional[PeftChoice], option("adapter.peft")]
LoraR = Annotated[Optional[int], option("adapter.lora_r")]
LoraTargets = Annotated[Optional[str], option("adapter.lora_targets", show="per model family")]
Optimizer = Annotated[Optional[OptimizerChoice], option("optim.optimizer")]
LayerDecay = Annotated[Optional[float], option("optim.layer_decay", show="off")]
HeadLrScale = Annotated[Optional[float], option("optim.head_lr_scale")]
Debug = Annotated[bool, option("debug", "--debug", panel=OUT, metavar="")]


CONFIG_KEYS = {"backbone": "name", "data": "path"}  # option name -> config key where they differ


def given(values: dict, *, exclude: set[str]) -> dict:
    """The CLI values the user set, as config overrides: None means 'not given' (the recipe or
    the default applies; False is a given --no-x); paths and choices become strings."""
    return {
        CONFIG_KEYS.get(k, k): str(v) if isinstance(v, Path) else getattr(v, "value", v)
        for k, v in values.items()
        if k not in exclude and v is not None
    }
