"""``finetune`` command line: parses flags into a config and calls the API; nothing else.

torch, timm and peft are imported inside the commands, so ``--help`` answers in about a second.
User errors print one red line and exit with code 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune a pretrained ImageNet backbone on your images.")

# ValueError covers ConfigError/DataError; OSError covers missing files, permissions, full disks;
# FloatingPointError is a diverged training run. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, FloatingPointError)


def _fail(e: BaseException, debug: bool) -> None:
    if debug:
        raise e
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False).print(f"[red]error:[/] {escape(str(e))}",
                                                soft_wrap=True)
    raise typer.Exit(2)


def _reporting():
    """Render the library's events and warnings on stdout while a command runs."""
    from .render import reporting

    return reporting(verbose=True)


# Flags shared by `run` and `inspect`: the freezing policy, adapters and LR layout.
POLICY_FLAGS = dict(
    freeze_until=typer.Option(None, help="First module that trains (layer3, blocks.4, stages.2); earlier ones are frozen."),
    freeze_stages=typer.Option(None, help="Freeze the first N stages ('finetune inspect' lists them)."),
    linear_probe=typer.Option(False, "--linear-probe", help="Freeze everything but the head."),
    train_only=typer.Option(None, help="Regex over parameter names: only these (and the head) train."),
    freeze=typer.Option(None, help="Regex over parameter names: freeze these too."),
    full=typer.Option(False, "--full", help="Train every parameter."),
    bn=typer.Option(None, help="BatchNorm: frozen (frozen layers keep statistics; default), eval-all, train."),
    unfreeze_every=typer.Option(None, help="Gradual unfreezing: thaw one more stage every N epochs."),
    unfreeze_at=typer.Option(None, help="Gradual unfreezing: thaw one more stage at these epochs, e.g. 3,6."),
    layer_decay=typer.Option(None, help="Layer-wise LR decay per stage from the head down, e.g. 0.75."),
    head_lr_scale=typer.Option(None, help="LR multiplier for the head, e.g. 10."),
    peft=typer.Option(None, help="Adapter: none, lora, loha, lokr or ia3 (via peft)."),
    lora_r=typer.Option(None, help="Adapter rank (default 8)."),
    lora_alpha=typer.Option(None, help="Adapter alpha (default 16)."),
    lora_dropout=typer.Option(None, help="Adapter dropout (default 0)."),
    lora_targets=typer.Option(None, help="Regex over module names to adapt (default: per model family)."),
)


@app.command()
def run(
    backbone: Optional[str] = typer.Option(None, help="timm name, hf-hub:ID or tv:NAME (torchvision); default tf_efficientnet_lite0."),
    data: Optional[Path] = typer.Option(None, help="Image folder: DIR/<class>/* or DIR/train|val|test/<class>/*."),
    weights: Optional[Path] = typer.Option(None, help="Pretrained weight file (.safetensors, .pth/.pt/.bin read without pickle)."),
    no_pretrained: bool = typer.Option(False, "--no-pretrained", help="Train from random init on purpose."),
    recipe: Optional[str] = typer.Option(None, help="Recipe YAML file or name in recipes/; flags override it."),
    freeze_until: Optional[str] = POLICY_FLAGS["freeze_until"],
    freeze_stages: Optional[int] = POLICY_FLAGS["freeze_stages"],
    linear_probe: bool = POLICY_FLAGS["linear_probe"],
    train_only: Optional[str] = POLICY_FLAGS["train_only"],
    freeze: Optional[str] = POLICY_FLAGS["freeze"],
    full: bool = POLICY_FLAGS["full"],
    bn: Optional[str] = POLICY_FLAGS["bn"],
    unfreeze_every: Optional[int] = POLICY_FLAGS["unfreeze_every"],
    unfreeze_at: Optional[str] = POLICY_FLAGS["unfreeze_at"],
    layer_decay: Optional[float] = POLICY_FLAGS["layer_decay"],
    head_lr_scale: Optional[float] = POLICY_FLAGS["head_lr_scale"],
    peft: Optional[str] = POLICY_FLAGS["peft"],
    lora_r: Optional[int] = POLICY_FLAGS["lora_r"],
    lora_alpha: Optional[float] = POLICY_FLAGS["lora_alpha"],
    lora_dropout: Optional[float] = POLICY_FLAGS["lora_dropout"],
    lora_targets: Optional[str] = POLICY_FLAGS["lora_targets"],
    cache_features: bool = typer.Option(False, "--cache-features", help="With --linear-probe: compute features once, train the head on them (no augmentation)."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (default 10)."),
    batch_size: Optional[int] = typer.Option(None, help="Images per batch (default 32)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate after warmup (default 1e-3)."),
    optimizer: Optional[str] = typer.Option(None, help="adamw (default) or sgd."),
    weight_decay: Optional[float] = typer.Option(None, help="Weight decay on weights, never on biases/norms (default 0.05)."),
    warmup_epochs: Optional[float] = typer.Option(None, help="Linear LR warmup length in epochs (default 1)."),
    label_smoothing: Optional[float] = typer.Option(None, help="Cross-entropy label smoothing (default 0.1)."),
    head_dropout: Optional[float] = typer.Option(None, help="Dropout before the classifier (default 0)."),
    drop_path: Optional[float] = typer.Option(None, help="Stochastic depth of timm backbones, e.g. 0.1."),
    schedule: Optional[str] = typer.Option(None, help="LR after warmup: cosine (default), step or exponential."),
    step_epochs: Optional[float] = typer.Option(None, help="step schedule: decay every N epochs (default 30)."),
    decay_rate: Optional[float] = typer.Option(None, help="step/exponential: LR factor per step/epoch (default 0.1)."),
    clip_grad: Optional[float] = typer.Option(None, help="Clip the gradient norm to this value."),
    accum_steps: Optional[int] = typer.Option(None, help="Gradient accumulation: optimizer step every N batches."),
    mixup: Optional[float] = typer.Option(None, help="Mixup alpha (timm Mixup), e.g. 0.2."),
    cutmix: Optional[float] = typer.Option(None, help="CutMix alpha, e.g. 1.0."),
    mixup_off_epochs: Optional[int] = typer.Option(None, help="No mixup/cutmix in the last N epochs."),
    ema: bool = typer.Option(False, "--ema", help="Keep an EMA of the weights (timm ModelEmaV3); evaluated and saved as model_ema.safetensors."),
    ema_decay: Optional[float] = typer.Option(None, help="EMA decay per optimizer step (default 0.999)."),
    patience: Optional[int] = typer.Option(None, help="Early stopping: epochs without a better validation score."),
    nan_policy: Optional[str] = typer.Option(None, help="Non-finite loss: stop (default) or skip-batch."),
    save_every: Optional[int] = typer.Option(None, help="Write the resumable state every N epochs (default 1)."),
    save_every_steps: Optional[int] = typer.Option(None, help="Also write it every N optimizer steps inside an epoch."),
    deterministic: bool = typer.Option(False, "--deterministic", help="Deterministic kernels: bit-identical reruns (slower)."),
    sync_bn: bool = typer.Option(False, "--sync-bn", help="With several processes on CUDA: synchronised BatchNorm."),
    nproc: int = typer.Option(1, help="Processes on this machine (DistributedDataParallel via torchrun); --batch-size is per process."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model (~1 min start-up; no CPU gain measured)."),
    img_size: Optional[int] = typer.Option(None, help="Input size in pixels (default: the backbone's pretrained size)."),
    in_chans: Optional[int] = typer.Option(None, help="Bands of multi-band TIFFs (e.g. 13 for Sentinel-2); the first conv is adapted."),
    cache_images: Optional[str] = typer.Option(None, help="Decoded images between epochs: auto (default), memory, disk, none."),
    val_split: Optional[float] = typer.Option(None, help="Fraction per class held out for validation when there is no val/ folder (default 0.2)."),
    num_workers: Optional[int] = typer.Option(None, help="DataLoader workers (default: chosen from the cores)."),
    output: Optional[Path] = typer.Option(None, help="Run directory (default runs/<backbone>-<timestamp>)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run already in --output."),
    resume: Optional[Path] = typer.Option(None, help="Continue RUN_DIR from its last finished epoch, exactly as configured."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (stages, what trains, LRs) and exit."),
    device: Optional[str] = typer.Option(None, help="auto (default), cpu or cuda."),
    precision: Optional[str] = typer.Option(None, help="auto (default), fp32, bf16 or fp16."),
    seed: Optional[int] = typer.Option(None, help="Random seed for init, split and data order (default 0)."),
    strict: bool = typer.Option(False, "--strict", help="Fail on an unreadable or suspicious image instead of skipping it."),
    max_pixels: Optional[int] = typer.Option(None, help="Images with more pixels are skipped as decompression bombs."),
    class_weights: Optional[str] = typer.Option(None, help="Class imbalance: auto weighs the loss by inverse class frequency; none (default)."),
    sampler: Optional[str] = typer.Option(None, help="Class imbalance: balanced draws training images class-balanced; none (default)."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
):
    """Fine-tune a backbone on an image folder and write a run directory."""
    flags = _given(locals(), exclude={"data", "weights", "output", "recipe", "resume",
                                      "dry_run", "debug", "no_pretrained", "backbone", "nproc"})
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        raise typer.Exit(_torchrun(nproc))
    try:
        flags.update({k: str(v) for k, v in (("path", data), ("weights", weights),
                                             ("output", output)) if v is not None})
        if backbone is not None:
            flags["name"] = backbone
        if no_pretrained:
            flags["pretrained"] = False
        from .api import adapt

        with _reporting():
            adapt(recipe=recipe, resume=resume, dry_run=dry_run, **flags)
    except USER_ERRORS as e:
        _fail(e, debug)
    except Exception as e:
        if type(e).__name__ != "Interrupted":
            raise
        typer.echo(str(e), err=True)
        raise typer.Exit(130)


@app.command()
def inspect(
    backbone: str = typer.Option(..., help="timm name, hf-hub:ID or tv:NAME."),
    img_size: Optional[int] = typer.Option(None, help="Input size in pixels (fixed-size models)."),
    freeze_until: Optional[str] = POLICY_FLAGS["freeze_until"],
    freeze_stages: Optional[int] = POLICY_FLAGS["freeze_stages"],
    linear_probe: bool = POLICY_FLAGS["linear_probe"],
    train_only: Optional[str] = POLICY_FLAGS["train_only"],
    freeze: Optional[str] = POLICY_FLAGS["freeze"],
    full: bool = POLICY_FLAGS["full"],
    bn: Optional[str] = POLICY_FLAGS["bn"],
    layer_decay: Optional[float] = POLICY_FLAGS["layer_decay"],
    head_lr_scale: Optional[float] = POLICY_FLAGS["head_lr_scale"],
    peft: Optional[str] = POLICY_FLAGS["peft"],
    lora_r: Optional[int] = POLICY_FLAGS["lora_r"],
    lora_targets: Optional[str] = POLICY_FLAGS["lora_targets"],
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
):
    """Show a backbone's stages, parameter counts and the plan a policy makes (random weights,
    nothing downloaded)."""
    flags = _given(locals(), exclude={"backbone", "debug"})
    try:
        from .api import inspect as inspect_model

        with _reporting():
            model, report = inspect_model(backbone, **flags)
        from rich.console import Console

        from .models.adapters import default_targets
        from .models.info import classifier_name

        console = Console(highlight=False)
        if peft is None:
            targets = default_targets(model, classifier_name(model))
            console.print(f"--peft lora would adapt {len(targets)} modules by default, e.g. "
                          f"{', '.join(targets[:4])}{', ...' if len(targets) > 4 else ''}")
        console.print("--freeze-until takes any module that runs in forward, e.g. "
                      + ", ".join(s.modules[0] for s in report.stages[1:-1][:3]))
    except USER_ERRORS as e:
        _fail(e, debug)


def _torchrun(nproc: int) -> int:
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
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--standalone", "-m", "finetune", *args]
    return subprocess.call(cmd)


def _given(values: dict, *, exclude: set[str]) -> dict:
    """CLI values the user set: None and False mean 'not given' (recipe or default applies)."""
    return {k: v for k, v in values.items()
            if k not in exclude and v is not None and v is not False}


recipes_app = typer.Typer(no_args_is_help=True, help="List and show the shipped recipes.")
app.add_typer(recipes_app, name="recipes")


@recipes_app.command("list")
def recipes_list():
    """Each shipped recipe with the first line of its header."""
    from rich.console import Console
    from rich.table import Table

    from .config import recipes_dir

    table = Table(title=f"recipes in {recipes_dir()}")
    table.add_column("name")
    table.add_column("for")
    for path in sorted(recipes_dir().glob("*.yaml")):
        about = []
        for line in path.read_text().splitlines():
            if not line.startswith("#") or line.startswith(("# Why", "# Data", "# Checked")) \
                    or (about and line.startswith("# ") and ":" in line[:12]):
                break
            about.append(line.lstrip("# ").strip())
        table.add_row(path.stem, " ".join(about).split(" - ", 1)[-1])
    Console(highlight=False).print(table)
    typer.echo("use: finetune run --recipe NAME --data DIR; finetune recipes show NAME")


@recipes_app.command("show")
def recipes_show(
    name: str = typer.Argument(..., help="Recipe name (finetune recipes list) or YAML path."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
):
    """A recipe's header and every resolved value (its own and the defaults it keeps)."""
    try:
        from .config import FinetuneConfig, resolve_recipe

        path = resolve_recipe(name)
        cfg = FinetuneConfig.from_yaml(path)
        header = [line for line in path.read_text().splitlines() if line.startswith("#")]
        typer.echo("\n".join(header + [f"# resolved from {path}", cfg.to_yaml()]))
    except USER_ERRORS as e:
        _fail(e, debug)


@app.command("augment-preview")
def augment_preview(
    data: Path = typer.Option(..., help="Image folder to sample from."),
    recipe: Optional[str] = typer.Option(None, help="Recipe name or YAML path (default: the defaults)."),
    backbone: Optional[str] = typer.Option(None, help="Backbone whose preprocessing to use (default: the recipe's)."),
    img_size: Optional[int] = typer.Option(None, help="Input size in pixels."),
    images: int = typer.Option(4, help="Source images (rows)."),
    samples: int = typer.Option(6, help="Augmented samples per image (columns after the original)."),
    output: Path = typer.Option(Path("augment-preview.png"), help="PNG file to write."),
    seed: int = typer.Option(0, help="Random seed."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
):
    """Write a PNG grid: each row one image, first its evaluation view, then augmented samples
    as training sees them (before normalisation)."""
    try:
        from .tools.preview import augment_preview as make_preview

        path = make_preview(data, recipe=recipe, backbone=backbone, img_size=img_size,
                            images=images, samples=samples, output=output, seed=seed)
        typer.echo(f"wrote {path}")
    except USER_ERRORS as e:
        _fail(e, debug)


@app.command("lr-find")
def lr_find_command(
    data: Path = typer.Option(..., help="Image folder or CSV manifest."),
    backbone: Optional[str] = typer.Option(None, help="timm name, hf-hub:ID or tv:NAME; default tf_efficientnet_lite0."),
    weights: Optional[Path] = typer.Option(None, help="Pretrained weight file."),
    no_pretrained: bool = typer.Option(False, "--no-pretrained", help="Random init on purpose."),
    freeze_until: Optional[str] = POLICY_FLAGS["freeze_until"],
    freeze_stages: Optional[int] = POLICY_FLAGS["freeze_stages"],
    linear_probe: bool = POLICY_FLAGS["linear_probe"],
    layer_decay: Optional[float] = POLICY_FLAGS["layer_decay"],
    head_lr_scale: Optional[float] = POLICY_FLAGS["head_lr_scale"],
    img_size: Optional[int] = typer.Option(None, help="Input size in pixels."),
    batch_size: Optional[int] = typer.Option(None, help="Images per batch."),
    optimizer: Optional[str] = typer.Option(None, help="adamw (default) or sgd."),
    recipe: Optional[str] = typer.Option(None, help="Recipe YAML file or name in recipes/; flags override it."),
    start_lr: float = typer.Option(1e-7, help="First LR of the sweep."),
    end_lr: float = typer.Option(1.0, help="Last LR of the sweep."),
    steps: int = typer.Option(100, help="Optimizer steps of the sweep."),
    output: Path = typer.Option(Path("lr-find.png"), help="PNG plot of loss vs LR."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
):
    """LR range test with the run's model, freezing policy and data; plots loss vs LR and
    suggests a learning rate."""
    flags = _given(locals(), exclude={"data", "backbone", "weights", "no_pretrained", "start_lr",
                                      "end_lr", "steps", "output", "debug", "recipe"})
    try:
        from .tools.lrfind import lr_find

        if weights is not None:
            flags["weights"] = str(weights)
        if no_pretrained:
            flags["pretrained"] = False
        if backbone is not None:
            flags["name"] = backbone
        with _reporting():
            lr_find(None, str(data), recipe=recipe, start_lr=start_lr, end_lr=end_lr,
                    steps=steps, output=output, **flags)
    except USER_ERRORS as e:
        _fail(e, debug)


@app.command()
def scan(
    data: Path = typer.Argument(..., help="Image folder (DIR/<class>/* or DIR/train|val|test/<class>/*) or CSV manifest."),
    val_split: float = typer.Option(0.2, help="Validation fraction used when there is no val/ folder."),
    seed: int = typer.Option(0, help="Split seed."),
    strict: bool = typer.Option(False, "--strict", help="Exit with an error on any bad or suspicious file."),
    max_pixels: int = typer.Option(89_478_485, help="Larger images count as decompression bombs."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
):
    """Check every image of a folder and report classes, splits, sizes, imbalance, bad files and
    duplicates (cached: a second scan of an unchanged folder decodes nothing)."""
    try:
        from .data.folder import scan_folder
        from .data.manifest import scan_csv
        from .events import emit

        scan_any = scan_csv if data.suffix.lower() == ".csv" else scan_folder
        with _reporting():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the report lists them
                info = scan_any(data, val_split=val_split, seed=seed, strict=strict,
                                max_pixels=max_pixels)
            emit("scan", data=info)
    except USER_ERRORS as e:
        _fail(e, debug)


@app.command()
def predict(
    run_dir: Path = typer.Argument(..., help="Run directory written by 'finetune run'."),
    images: List[Path] = typer.Argument(..., help="Image files or folders (walked recursively)."),
    top_k: int = typer.Option(1, help="Labels per image, most likely first."),
    output: Optional[Path] = typer.Option(None, help="Write results to FILE.csv or FILE.json."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
):
    """Predict labels for images with a fine-tuned run directory."""
    try:
        if output is not None and output.suffix not in (".csv", ".json"):
            raise ValueError(f"--output {output}: use a .csv or .json file name")
        from .inference import predict as predict_images

        with _reporting():
            records = predict_images(run_dir, images, top_k=top_k, device=device)
        _print_predictions(records, top_k)
        if output is not None:
            write_predictions(records, output)
            typer.echo(f"wrote {len(records)} predictions to {output}")
    except USER_ERRORS as e:
        _fail(e, debug)


@app.command()
def demo(
    epochs: int = typer.Option(7, help="Training epochs."),
    img_size: int = typer.Option(128, help="Input size in pixels."),
    output: Optional[Path] = typer.Option(None, help="Run directory (default runs/demo-<timestamp>)."),
    data_dir: Optional[Path] = typer.Option(None, help="Where to lay out the elpv image folder (symlinks)."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
):
    """Fine-tune ImageNet EfficientNet-Lite0 on real solar-cell images (elpv), then predict."""
    try:
        from .tools.demo import run_demo

        with _reporting():
            run_demo(epochs=epochs, img_size=img_size, output=output, data_dir=data_dir)
    except USER_ERRORS as e:
        _fail(e, debug)


def write_predictions(records: list[dict], path: Path) -> None:
    """CSV (``path,label,prob,label_2,prob_2,...``) or JSON list of records, written atomically."""
    import csv
    import json

    from ._io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            if path.suffix == ".json":
                json.dump(records, f, indent=2)
            else:
                fields = list(records[0]) if records else ["path", "label", "prob"]
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(records)


def _print_predictions(records: list[dict], top_k: int) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{len(records)} predictions")
    keys = list(records[0]) if records else ["path", "label", "prob"]
    for key in keys:
        table.add_column(key, justify="right" if key.startswith("prob") else "left")
    for r in records:
        table.add_row(*(f"{r[k]:.4f}" if k.startswith("prob") else escape(str(r[k]))
                        for k in keys))
    Console(highlight=False).print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
