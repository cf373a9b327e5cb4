"""``recipes``, ``augment-preview``, ``lr-find``, ``scan``, ``pack``, ``predict`` and ``demo``."""

import warnings
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ..config import FinetuneConfig
from .app import app, examples
from .handling import handled, rendering
from .options import (
    _DEFAULTS,
    DATA,
    HELP,
    MODEL,
    OPTIM,
    OUT,
    TRAIN,
    Backbone,
    BatchSize,
    Debug,
    DeviceChoice,
    FreezeStages,
    FreezeUntil,
    HeadLrScale,
    ImgSize,
    LayerDecay,
    LinearProbe,
    Optimizer,
    Pretrained,
    Recipe,
    Weights,
    given,
    option,
)

recipes_app = typer.Typer(no_args_is_help=True, help="List and show the shipped recipes.")
app.add_typer(recipes_app, name="recipes")


@recipes_app.command("list")
def recipes_list() -> None:
    """Each shipped recipe with the first line of its header."""
    with handled(False):
        from rich.console import Console
        from rich.table import Table

        from ..config import recipes_dir

        table = Table(title=f"recipes in {recipes_dir()}")
        table.add_column("name")
        table.add_column("for")
        for path in sorted(recipes_dir().glob("*.yaml")):
            table.add_row(path.stem, _recipe_about(path.read_text()))
        Console(highlight=False, soft_wrap=True).print(table)
        typer.echo("use: finetune run --recipe NAME --data DIR; finetune recipes show NAME")


def _recipe_about(text: str) -> str:
    """What a recipe is for: the first paragraph of its comment header."""
    about: list[str] = []
    for line in text.splitlines():
        if (
            not line.startswith("#")
            or line.startswith(("# Why", "# Data", "# Checked"))
            or (about and line.startswith("# ") and ":" in line[:12])
        ):
            break
        about.append(line.lstrip("# ").strip())
    return " ".join(about).split(" - ", 1)[-1]


@recipes_app.command("show")
def recipes_show(
    name: Annotated[str, typer.Argument(help="Recipe name (finetune recipes list) or YAML path.")],
    debug: Debug = False,
) -> None:
    """A recipe's header and every resolved value (its own and the defaults it keeps)."""
    with handled(debug):
        from ..config import resolve_recipe

        path = resolve_recipe(name)
        cfg = FinetuneConfig.from_yaml(path)
        header = [line for line in path.read_text().splitlines() if line.startswith("#")]
        typer.echo("\n".join(header + [f"# resolved from {path}", cfg.to_yaml()]))


@app.command("augment-preview")
def augment_preview(
    data: Annotated[Path, option("data", panel=DATA, help="Image folder to sample from.")],
    recipe: Annotated[Optional[str], option("recipe", panel=MODEL, show="the defaults")] = None,
    backbone: Annotated[Optional[str], option("backbone.name", show="the recipe's")] = None,
    img_size: ImgSize = None,
    images: Annotated[int, option("images", panel=DATA, help="Source images (rows).")] = 4,
    samples: Annotated[int, option("samples", panel=DATA, help="Augmented samples per image.")] = 6,
    seed: Annotated[int, option("seed", panel=DATA, help="Random seed.")] = 0,
    output: Annotated[Path, option("output", panel=OUT, help="PNG file to write.")] = Path(
        "augment-preview.png"
    ),
    debug: Debug = False,
) -> None:
    """Write a PNG grid: each row one image, first its evaluation view, then augmented samples
    as training sees them (before normalisation)."""
    with handled(debug):
        from ..tools.preview import augment_preview as make_preview

        path = make_preview(
            data,
            recipe=recipe,
            backbone=backbone,
            img_size=img_size,
            images=images,
            samples=samples,
            output=output,
            seed=seed,
        )
        typer.echo(f"wrote {path}")


@app.command("lr-find")
def lr_find_command(
    data: Annotated[Path, option("data", panel=DATA, help="Image folder or CSV manifest.")],
    img_size: ImgSize = None,
    batch_size: BatchSize = None,
    backbone: Backbone = None,
    weights: Weights = None,
    pretrained: Pretrained = None,
    recipe: Recipe = None,
    freeze_until: FreezeUntil = None,
    freeze_stages: FreezeStages = None,
    linear_probe: LinearProbe = None,
    optimizer: Optimizer = None,
    layer_decay: LayerDecay = None,
    head_lr_scale: HeadLrScale = None,
    start_lr: Annotated[
        float, option("start_lr", panel=OPTIM, help="First LR of the sweep.")
    ] = 1e-7,
    end_lr: Annotated[float, option("end_lr", panel=OPTIM, help="Last LR of the sweep.")] = 1.0,
    steps: Annotated[int, option("steps", panel=OPTIM, help="Optimizer steps of the sweep.")] = 100,
    output: Annotated[Path, option("output", panel=OUT, help="PNG plot of loss vs LR.")] = Path(
        "lr-find.png"
    ),
    debug: Debug = False,
) -> None:
    """LR range test with the run's model, freezing policy and data; plots loss vs LR and
    suggests a learning rate."""
    flags = given(locals(), exclude={"data", "debug"})  # with the sweep's own options
    with handled(debug):
        from ..tools.lrfind import lr_find

        with rendering():
            lr_find(None, str(data), **flags)


@app.command(
    epilog=examples(
        "finetune scan photos/",
        "finetune scan labels.csv --strict",
        "finetune scan shards/",
        "finetune scan hf:./beans",
    )
)
def scan(
    data: Annotated[
        Path,
        typer.Argument(help=HELP["data.path"] + " Also WebDataset shards or hf:PATH_OR_NAME."),
    ],
    val_split: Annotated[float, option("data.val_split", show="")] = _DEFAULTS.data.val_split,
    seed: Annotated[
        int, option("train.seed", panel=DATA, show="", help="Split seed.")
    ] = _DEFAULTS.train.seed,
    strict: Annotated[
        bool,
        option("data.strict", show="", help="Exit with an error on any bad or suspicious file."),
    ] = False,
    max_pixels: Annotated[int, option("data.max_pixels", show="")] = _DEFAULTS.data.max_pixels,
    debug: Debug = False,
) -> None:
    """Check every image of a folder or CSV manifest and report classes, splits, sizes,
    imbalance, bad files and duplicates (cached: a second scan of an unchanged folder decodes
    nothing). Shards and Hugging Face data sets: classes, splits, samples without image or label,
    and a decoded sample of 1,000. Exits 2 after the report when a problem would stop a run."""
    with handled(debug):
        from ..data.folder import scan_folder
        from ..data.hf import is_hf
        from ..data.manifest import scan_csv
        from ..data.shards import is_shards
        from ..events import emit

        spec = str(data)
        with rendering():
            if is_hf(spec) or is_shards(spec):
                from ..data.samplecheck import scan_source

                info = scan_source(
                    spec, val_split=val_split, seed=seed, max_pixels=max_pixels, strict=strict
                )
            else:
                scan_any = scan_csv if data.suffix.lower() == ".csv" else scan_folder
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the report lists them
                    info = scan_any(
                        data,
                        val_split=val_split,
                        seed=seed,
                        strict=strict,
                        max_pixels=max_pixels,
                        report_only=True,  # every problem is reported, not just the first
                    )
            emit("scan", data=info)
        if info.errors:  # the report lists them all; the last line says it, once
            from ..errors import DataError

            raise DataError(
                f"{len(info.errors)} problem(s) above would stop a run; fix them and scan again"
            )


@app.command(
    epilog=examples(
        "finetune pack photos/ shards/",
        "finetune pack labels.csv shards/ --shard-size 1GB",
    )
)
def pack(
    data: Annotated[Path, typer.Argument(help="Image folder or CSV manifest to pack.")],
    out: Annotated[Path, typer.Argument(help="New folder for the shards.")],
    shard_size: Annotated[
        str, option("shard_size", panel=DATA, help="Bytes per shard (500MB, 2GB, 1GiB).")
    ] = "500MB",
    val_split: Annotated[float, option("data.val_split", show="")] = _DEFAULTS.data.val_split,
    seed: Annotated[
        int, option("train.seed", panel=DATA, show="", help="Split and shuffle seed.")
    ] = _DEFAULTS.train.seed,
    max_pixels: Annotated[int, option("data.max_pixels", show="")] = _DEFAULTS.data.max_pixels,
    debug: Debug = False,
) -> None:
    """Scan a folder or CSV manifest (bad files left out and listed) and write its splits as
    WebDataset shards, with classes.txt and manifest.json; 'finetune run --data OUT' trains on
    them."""
    with handled(debug):
        from ..data.pack import pack_data

        with rendering():
            report = pack_data(data, out, shard_size=shard_size, val_split=val_split,
                               seed=seed, max_pixels=max_pixels)  # fmt: skip
        _print_pack(report)


def _print_pack(report) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    table = Table(title=f"{len(report.shards)} shards in {escape(str(report.out))}")
    for name, justify in (("shard", "left"), ("split", "left"), ("images", "right"),
                          ("MB", "right")):  # fmt: skip
        table.add_column(name, justify=justify)
    for s in report.shards[:MAX_ROWS]:
        table.add_row(escape(s.name), s.split, f"{s.samples:,}", f"{s.bytes / 1e6:,.1f}")
    if len(report.shards) > MAX_ROWS:
        table.caption = f"the first {MAX_ROWS} of {len(report.shards)}; all: manifest.json"
    console.print(table)
    counts = ", ".join(f"{k} {n:,}" for k, n in report.counts.items())
    console.print(
        f"packed {sum(report.counts.values()):,} images of {len(report.classes)} classes "
        f"({escape(counts)}), {report.total_bytes / 1e6:,.1f} MB in {report.seconds:.1f} s; "
        "classes.txt and manifest.json beside them"
    )
    for path, why in report.skipped[:MAX_ROWS]:
        console.print(f"[yellow]left out {escape(path)}: {escape(why)}[/]")
    if len(report.skipped) > MAX_ROWS:
        console.print(f"[yellow]... and {len(report.skipped) - MAX_ROWS} more (manifest.json)[/]")
    console.print(f"train on them: finetune run --data {escape(str(report.out))}")


@app.command(
    epilog=examples(
        "finetune predict runs/my-run photo.jpg",
        "finetune predict runs/my-run photos/ --top-k 3 --output predictions.csv",
    )
)
def predict(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by 'finetune run'.")],
    images: Annotated[
        List[Path], typer.Argument(help="Image files or folders (walked recursively).")
    ],
    top_k: Annotated[
        int, option("top_k", panel=OUT, help="Labels per image, most likely first.")
    ] = 1,
    output: Annotated[
        Optional[Path], option("output", panel=OUT, help="Write FILE.csv or FILE.json.")
    ] = None,
    device: Annotated[
        DeviceChoice, option("device", panel=MODEL, help="Device the model runs on.")
    ] = DeviceChoice.cpu,
    tta: Annotated[
        bool, option("tta", "--tta", panel=OUT, metavar="", help="Average with horizontal flips.")
    ] = False,
    debug: Debug = False,
) -> None:
    """Predict labels for images with a fine-tuned run directory."""
    with handled(debug):
        if output is not None and output.suffix not in (".csv", ".json"):
            raise ValueError(f"--output {output}: use a .csv or .json file name")
        from ..errors import DataError
        from ..inference import predict as predict_images

        with rendering():
            records = predict_images(run_dir, images, top_k=top_k, device=device.value, tta=tta)
        if not records:  # regression (review): nothing readable exited 0 with an empty table
            raise DataError(f"no readable image in {', '.join(map(str, images))} (see the "
                            "warnings above)")  # fmt: skip
        if output is None:
            _print_predictions(records, top_k)
            return
        write_predictions(records, output)  # a file asked for: a summary, not every row
        typer.echo(f"wrote {len(records)} predictions to {output}; {_summary(records)}")


@app.command()
def demo(
    img_size: Annotated[int, option("img_size", panel=DATA, help="Input size in pixels.")] = 128,
    data_dir: Annotated[
        Optional[Path],
        option("data_dir", panel=DATA, help="Where to lay out the elpv image folder (symlinks)."),
    ] = None,
    budget: Annotated[
        str, option("budget", panel=TRAIN, help="Wall-clock budget for training (90s, 5m).")
    ] = "3m",
    epochs: Annotated[
        Optional[int], option("epochs", panel=TRAIN, help="Train N epochs instead of a budget.")
    ] = None,
    output: Annotated[Optional[Path], option("output.output", show="runs/demo-<timestamp>")] = None,
    backbone: Annotated[
        Optional[str],
        option(
            "backbone.name",
            show="tf_efficientnet_lite2",
            help="Another backbone to try "
            "(timm name, hf-hub:ID or tv:NAME) whose weights this machine has.",
        ),
    ] = None,
    seed: Annotated[
        int,
        option(
            "train.seed", show="0", help="Training seed (init, data order); the split is fixed."
        ),
    ] = 0,
    debug: Debug = False,
) -> None:
    """Fine-tune ImageNet EfficientNet-Lite2 on real solar-cell images (elpv), then predict."""
    with handled(debug):
        from ..tools.demo import run_demo

        with rendering():
            run_demo(budget=None if epochs else budget, epochs=epochs, img_size=img_size,
                     output=output, data_dir=data_dir, seed=seed,
                     **({'backbone': backbone} if backbone else {}))  # fmt: skip


def write_predictions(records: list[dict], path: Path) -> None:
    """CSV (``path,label,prob,label_2,prob_2,...``) or JSON list of records, written atomically."""
    import csv
    import json

    from .._io import atomic_path

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


def _summary(records: list[dict]) -> str:
    """``cat 6, dog 6 (mean top-1 probability 0.71)``: what a predictions file holds."""
    from collections import Counter

    if records and "label" in records[0]:
        counts = Counter(r["label"] for r in records)
        mean = sum(r["prob"] for r in records) / len(records)
        return (
            ", ".join(f"{k} {n}" for k, n in counts.most_common())
            + f" (mean top-1 probability {mean:.2f})"
        )
    counts = Counter(x for r in records for x in r.get("labels", "").split(";") if x)
    return "labels " + (", ".join(f"{k} {n}" for k, n in counts.most_common()) or "none")


MAX_ROWS = 50  # more rows than this on a screen help nobody: --output writes them all


def _print_predictions(records: list[dict], top_k: int) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{len(records)} predictions")
    keys = list(records[0]) if records else ["path", "label", "prob"]
    for key in keys:
        table.add_column(key, justify="right" if key.startswith("prob") else "left")
    for r in records[:MAX_ROWS]:
        table.add_row(*(f"{r[k]:.4f}" if k.startswith("prob") else escape(str(r[k])) for k in keys))
    if len(records) > MAX_ROWS:
        table.caption = (f"the first {MAX_ROWS} of {len(records)}; all: --output FILE.csv; "
                         f"{escape(_summary(records))}")  # fmt: skip
    Console(highlight=False, soft_wrap=True).print(table)
