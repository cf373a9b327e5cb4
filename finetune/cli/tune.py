"""``finetune tune``: flags become the study's options and the fixed config fields; the report
becomes a table of trials and the lines that say where the result is."""

from pathlib import Path
from typing import Annotated, Optional

from .app import app, examples
from .handling import handled
from .options import (
    DATA,
    OPTIM,
    OUT,
    TRAIN,
    Backbone,
    BatchSize,
    Debug,
    DeviceChoice,
    FreezeStages,
    FreezeUntil,
    Full,
    HeadLrScale,
    ImgSize,
    LayerDecay,
    LinearProbe,
    PrecisionChoice,
    Pretrained,
    Recipe,
    Weights,
    given,
    option,
)

STUDY = "Study"
OWN = {"budget", "trials", "search", "storage", "study", "output", "pruner", "refit", "teach",
       "recipe", "debug"}  # fmt: skip


@app.command(
    epilog=examples(
        "finetune tune --data photos/ --budget 30m",
        "finetune tune --data photos/ --backbone resnet50 --budget 2h --storage sqlite:///study.db",
        "finetune run --recipe runs/tune-photos-resnet50/study/best.yaml --data photos/",
    )
)
def tune(
    data: Annotated[Optional[str], option("data.path", "--data")] = None,
    backbone: Backbone = None,
    budget: Annotated[
        Optional[str],
        option(
            "budget",
            panel=STUDY,
            help="Wall-clock time for the whole study (30m, 2h); a resumed study has what is left.",
        ),
    ] = None,
    trials: Annotated[
        Optional[int],
        option(
            "trials",
            panel=STUDY,
            help="Stop after N trials (all workers of the study); from 3 on, the last "
            "retrains the best config.",
        ),
    ] = None,
    search: Annotated[
        Optional[str],
        option(
            "search",
            panel=STUDY,
            show="recipes/search/default.yaml",
            help="Search space YAML: config fields -> {low, high, log} or a list of choices.",
        ),
    ] = None,  # fmt: skip
    storage: Annotated[
        Optional[str],
        option(
            "storage",
            panel=STUDY,
            show="in memory",
            help="Optuna storage (sqlite:///study.db): resume, or search with other workers.",
        ),
    ] = None,  # fmt: skip
    study: Annotated[
        Optional[str],
        option("study", panel=STUDY, show="<data folder>-<backbone>", help="Study name."),
    ] = None,
    pruner: Annotated[
        str,
        option("pruner", panel=STUDY, help="Stop weak trials early: median, halving or none."),
    ] = "median",
    refit: Annotated[
        bool,
        option(
            "refit",
            panel=STUDY,
            help="The final trial retrains the best config on the training and validation "
            "images; --no-refit keeps the validation images out.",
        ),
    ] = True,  # fmt: skip
    teach: Annotated[
        bool,
        option(
            "teach",
            panel=STUDY,
            help="The final trial also learns from the trial whose config it retrains (its "
            "probabilities mixed into the targets); --no-teach: from the labels alone.",
        ),
    ] = True,  # fmt: skip
    output: Annotated[
        Optional[Path],
        option(
            "output",
            panel=OUT,
            show="runs/tune-<study>",
            help="The study's folder: trials/ (a run each) and study/.",
        ),
    ] = None,  # fmt: skip
    recipe: Recipe = None,
    weights: Weights = None,
    pretrained: Pretrained = None,
    img_size: ImgSize = None,
    batch_size: BatchSize = None,
    num_workers: Annotated[
        Optional[int], option("data.num_workers", show="chosen from the cores")
    ] = None,
    val_split: Annotated[Optional[float], option("data.val_split")] = None,
    freeze_until: FreezeUntil = None,
    freeze_stages: FreezeStages = None,
    linear_probe: LinearProbe = None,
    full: Full = None,
    lr: Annotated[Optional[float], option("optim.lr", panel=OPTIM)] = None,
    layer_decay: LayerDecay = None,
    head_lr_scale: HeadLrScale = None,
    label_smoothing: Annotated[Optional[float], option("optim.label_smoothing")] = None,
    epochs: Annotated[Optional[int], option("train.epochs", panel=TRAIN)] = None,
    mixup: Annotated[Optional[float], option("train.mixup")] = None,
    min_crop_scale: Annotated[
        Optional[float],
        option("data.min_crop_scale", panel=DATA, help="Smallest random crop (area fraction)."),
    ] = None,
    color_jitter: Annotated[
        Optional[float], option("data.color_jitter", panel=DATA, help="Colour jitter strength.")
    ] = None,
    seed: Annotated[Optional[int], option("train.seed")] = None,
    device: Annotated[Optional[DeviceChoice], option("train.device")] = None,
    precision: Annotated[Optional[PrecisionChoice], option("train.precision")] = None,
    log: Annotated[Optional[str], option("output.log", show="none")] = None,
    debug: Debug = False,
) -> None:
    """Search learning rate, freezing depth, layer decay, augmentation, label smoothing, mixup
    and epochs with Optuna within a time budget; every trial is a run, the best one the result.
    Flags given here are fixed, not searched."""
    fixed = given(locals(), exclude=OWN)
    with handled(debug):
        from ..tools.tune import tune as run_study
        from ..tools.tune.view import tune_reporting

        with tune_reporting(True):
            report = run_study(
                None, None, budget=budget, trials=trials, search=search, storage=storage,
                study=study, output=output, pruner=pruner, refit=refit, teach=teach, recipe=recipe,
                **fixed,
            )  # fmt: skip
        print_report(report)


def print_report(report) -> None:
    """The trials as a table (best first marked), then where the result is and what next."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:  # piped: the table as wide as it is, never squeezed
        console.width = 10_000
    keys: list[str] = []
    for row in report.trials:
        keys += [k for k in row.params if k not in keys]
    table = Table(title=f"study {escape(report.study_name)}: {len(report.trials)} trials")
    for name in ("trial", "state", report.score_name, "trained", "s", *keys):
        table.add_column(escape(name), justify="left" if name == "state" else "right")
    for r in report.trials:
        value = "" if r.value is None else f"{r.value:.4f}" + (" *" if r.best else "")
        params = [_value(r.params.get(k)) for k in keys]
        table.add_row(str(r.number), r.state, value, _value(r.epochs), _value(r.seconds), *params)
    console.print(table)
    if report.best_run_dir is None:
        console.print("no trial finished: no result (give a larger --budget or --trials)")
        return
    best_yaml = report.output / "study" / "best.yaml"
    console.print(f"best: {report.score_name} {report.best_value:.4f} in "
                  f"{escape(str(report.best_run_dir))}")  # fmt: skip
    console.print(f"its config: {escape(str(best_yaml))} (finetune run --recipe "
                  f"{escape(str(best_yaml))} --data DIR trains it again)")  # fmt: skip
    console.print(f"study files: {escape(str(report.output / 'study'))} (trials.csv, "
                  "best.yaml, summary.json, history.png, importances.png)")  # fmt: skip


def _value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
