"""``finetune run`` and ``finetune inspect``: flags become config overrides for the API."""

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import app, examples
from .handling import handled, rendering
from .options import (
    OUT,
    POLICY,
    TRAIN,
    Backbone,
    BatchSize,
    Bn,
    CacheImagesChoice,
    ClassWeightsChoice,
    Debug,
    DeviceChoice,
    Freeze,
    FreezeStages,
    FreezeUntil,
    Full,
    HeadInitChoice,
    HeadLrScale,
    ImgSize,
    LayerDecay,
    LinearProbe,
    LoraR,
    LoraTargets,
    NanPolicyChoice,
    Optimizer,
    Peft,
    PrecisionChoice,
    Pretrained,
    Recipe,
    SamplerChoice,
    ScanChoice,
    ScheduleChoice,
    TrainOnly,
    Weights,
    given,
    option,
)


@app.command(
    epilog=examples(
        "finetune run --data photos/ --epochs 5",
        "finetune run --recipe remote-sensing --data labels.csv --lr 3e-4",
        "finetune run --backbone resnet50 --data photos/ --freeze-stages 2 --dry-run",
    )
)
def run(
    data: Annotated[Optional[str], option("data.path", "--data")] = None,
    image_column: Annotated[
        Optional[str], option("data.image_column", show="the first Image feature")
    ] = None,
    label_column: Annotated[
        Optional[str], option("data.label_column", show="the first ClassLabel")
    ] = None,
    val_split: Annotated[Optional[float], option("data.val_split")] = None,
    train_on_val: Annotated[Optional[bool], option("data.train_on_val")] = None,
    img_size: ImgSize = None,
    in_chans: Annotated[Optional[int], option("data.in_chans", show="RGB")] = None,
    batch_size: BatchSize = None,
    num_workers: Annotated[
        Optional[int], option("data.num_workers", show="chosen from the cores")
    ] = None,
    cache_images: Annotated[Optional[CacheImagesChoice], option("data.cache_images")] = None,
    scan: Annotated[Optional[ScanChoice], option("data.scan")] = None,
    class_weights: Annotated[Optional[ClassWeightsChoice], option("data.class_weights")] = None,
    sampler: Annotated[Optional[SamplerChoice], option("data.sampler")] = None,
    strict: Annotated[Optional[bool], option("data.strict")] = None,
    max_pixels: Annotated[Optional[int], option("data.max_pixels")] = None,
    backbone: Backbone = None,
    weights: Weights = None,
    pretrained: Pretrained = None,
    recipe: Recipe = None,
    head_dropout: Annotated[Optional[float], option("head.head_dropout")] = None,
    head_init: Annotated[Optional[HeadInitChoice], option("head.head_init")] = None,
    drop_path: Annotated[Optional[float], option("backbone.drop_path")] = None,
    freeze_until: FreezeUntil = None,
    freeze_stages: FreezeStages = None,
    linear_probe: LinearProbe = None,
    train_only: TrainOnly = None,
    freeze: Freeze = None,
    full: Full = None,
    bn: Bn = None,
    unfreeze_every: Annotated[Optional[int], option("policy.unfreeze_every")] = None,
    unfreeze_at: Annotated[Optional[str], option("policy.unfreeze_at", show="off")] = None,
    cache_features: Annotated[Optional[bool], option("train.cache_features", panel=POLICY)] = None,
    peft: Peft = None,
    lora_r: LoraR = None,
    lora_alpha: Annotated[Optional[float], option("adapter.lora_alpha")] = None,
    lora_dropout: Annotated[Optional[float], option("adapter.lora_dropout")] = None,
    lora_targets: LoraTargets = None,
    lr: Annotated[Optional[float], option("optim.lr", show="auto")] = None,
    optimizer: Optimizer = None,
    weight_decay: Annotated[Optional[float], option("optim.weight_decay")] = None,
    momentum: Annotated[Optional[float], option("optim.momentum")] = None,
    warmup_epochs: Annotated[Optional[float], option("optim.warmup_epochs", show="auto")] = None,
    schedule: Annotated[Optional[ScheduleChoice], option("optim.schedule")] = None,
    step_epochs: Annotated[Optional[float], option("optim.step_epochs")] = None,
    decay_rate: Annotated[Optional[float], option("optim.decay_rate")] = None,
    clip_grad: Annotated[Optional[float], option("optim.clip_grad", show="off")] = None,
    accum_steps: Annotated[Optional[int], option("optim.accum_steps")] = None,
    label_smoothing: Annotated[Optional[float], option("optim.label_smoothing")] = None,
    layer_decay: LayerDecay = None,
    head_lr_scale: HeadLrScale = None,
    epochs: Annotated[Optional[int], option("train.epochs")] = None,
    budget: Annotated[Optional[str], option("train.budget", show="off")] = None,
    mixup: Annotated[Optional[float], option("train.mixup")] = None,
    cutmix: Annotated[Optional[float], option("train.cutmix")] = None,
    mixup_off_epochs: Annotated[Optional[int], option("train.mixup_off_epochs")] = None,
    ema: Annotated[Optional[bool], option("train.ema")] = None,
    ema_decay: Annotated[Optional[float], option("train.ema_decay")] = None,
    patience: Annotated[Optional[int], option("train.patience")] = None,
    teacher: Annotated[Optional[str], option("train.teacher", show="none")] = None,
    distill: Annotated[Optional[float], option("train.distill")] = None,
    nan_policy: Annotated[Optional[NanPolicyChoice], option("train.nan_policy")] = None,
    save_every: Annotated[Optional[int], option("train.save_every")] = None,
    save_every_steps: Annotated[Optional[int], option("train.save_every_steps")] = None,
    deterministic: Annotated[Optional[bool], option("train.deterministic")] = None,
    nproc: Annotated[int, option("nproc", panel=TRAIN)] = 1,
    sync_bn: Annotated[Optional[bool], option("train.sync_bn")] = None,
    compile: Annotated[Optional[bool], option("train.compile")] = None,
    channels_last: Annotated[Optional[bool], option("train.channels_last")] = None,
    device: Annotated[Optional[DeviceChoice], option("train.device")] = None,
    precision: Annotated[Optional[PrecisionChoice], option("train.precision")] = None,
    seed: Annotated[Optional[int], option("train.seed")] = None,
    output: Annotated[
        Optional[Path], option("output.output", show="runs/<backbone>-<timestamp>")
    ] = None,
    overwrite: Annotated[Optional[bool], option("output.overwrite")] = None,
    log: Annotated[Optional[str], option("output.log", show="none")] = None,
    keep_state: Annotated[Optional[bool], option("output.keep_state")] = None,
    resume: Annotated[Optional[Path], option("resume", panel=OUT)] = None,
    dry_run: Annotated[
        bool, option("dry_run", "--dry-run/--no-dry-run", panel=OUT, metavar="")
    ] = False,
    debug: Debug = False,
) -> None:
    """Fine-tune a backbone on an image folder or CSV manifest and write a run directory."""
    flags = given(locals(), exclude={"recipe", "resume", "dry_run", "debug", "nproc"})
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        raise typer.Exit(torchrun(nproc))
    with handled(debug):
        from ..api import adapt

        with rendering():
            adapt(recipe=recipe, resume=resume, dry_run=dry_run, **flags)


@app.command()
def inspect(
    backbone: Annotated[str, option("backbone.name", show="")],
    img_size: Annotated[
        Optional[int], option("data.img_size", help="Input size (fixed-size models).")
    ] = None,
    freeze_until: FreezeUntil = None,
    freeze_stages: FreezeStages = None,
    linear_probe: LinearProbe = None,
    train_only: TrainOnly = None,
    freeze: Freeze = None,
    full: Full = None,
    bn: Bn = None,
    layer_decay: LayerDecay = None,
    head_lr_scale: HeadLrScale = None,
    peft: Peft = None,
    lora_r: LoraR = None,
    lora_targets: LoraTargets = None,
    debug: Debug = False,
) -> None:
    """Show a backbone's stages, parameter counts and the plan a policy makes (random weights,
    nothing downloaded)."""
    flags = given(locals(), exclude={"backbone", "debug"})
    with handled(debug):
        from ..api import inspect as inspect_model

        with rendering():
            model, report = inspect_model(backbone, **flags)
        from rich.console import Console

        from ..models.adapters import default_targets
        from ..models.info import classifier_name

        console = Console(highlight=False, soft_wrap=True)  # piped: lines stay whole
        if peft is None:
            targets = default_targets(model, classifier_name(model))
            more = ", ..." if len(targets) > 4 else ""
            console.print(
                f"--peft lora would adapt {len(targets)} modules by default, e.g. "
                f"{', '.join(targets[:4])}{more}"
            )
        modules = ", ".join(s.modules[0] for s in report.stages[1:-1][:3])
        console.print(f"--freeze-until takes any module that runs in forward, e.g. {modules}")


def torchrun(nproc: int) -> int:
    """Re-run this command under torchrun with ``nproc`` processes; returns its exit code."""
    import subprocess

    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--standalone"]
    return subprocess.call([sys.executable, *launcher, "-m", "finetune", *args])
