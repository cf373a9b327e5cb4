"""After training: ``finetune eval``, ``finetune export`` and ``finetune push``."""

from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from .app import app, examples
from .handling import handled, rendering
from .options import OUT, Debug, DeviceChoice, option

# the formats of finetune.export.FORMATS (not imported here: --help must not import torch)
ExportFormat = Enum("ExportFormat", {"onnx": "onnx", "torchscript": "torchscript"}, type=str)


@app.command(
    epilog=examples(
        "finetune push runs/my-run my-org/solar-cells",
        "finetune push runs/my-run my-org/solar-cells --private",
    )
)
def push(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by 'finetune run'.")],
    repo_id: Annotated[str, typer.Argument(help="Hub repository: ORG/NAME.")],
    private: Annotated[
        bool, option("private", "--private", panel=OUT, metavar="", help="A private repository.")
    ] = False,
    token: Annotated[
        Optional[str],
        option("token", panel=OUT, help="Hub token (default: HF_TOKEN or 'hf auth login')."),
    ] = None,
    debug: Debug = False,
) -> None:
    """Upload the weights, config.json, model card and plots to the Hugging Face hub, so that
    timm.create_model("hf-hub:ORG/NAME", pretrained=True) loads the model."""
    with handled(debug):
        from ..tools.push import push as push_run

        with rendering():
            url = push_run(run_dir, repo_id, private=private, token=token)
        typer.echo(f"uploaded {run_dir} to {url}")


@app.command(
    "export",
    epilog=examples(
        "finetune export runs/my-run",
        "finetune export runs/my-run --format torchscript --output deploy/",
    ),
)
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by 'finetune run'.")],
    format: Annotated[
        ExportFormat, option("format", panel=OUT, help="onnx (onnxruntime) or torchscript.")
    ] = ExportFormat.onnx,
    opset: Annotated[
        Optional[int], option("opset", panel=OUT, help="ONNX opset (default: the exporter's).")
    ] = None,
    output: Annotated[
        Optional[Path], option("output", panel=OUT, help="Folder (default RUN_DIR/export).")
    ] = None,
    images: Annotated[
        Optional[List[Path]],
        option("images", panel=OUT, help="Images to verify with (default: the run's data)."),
    ] = None,
    dynamic_batch: Annotated[
        bool,
        option(
            "dynamic_batch",
            "--dynamic-batch/--static-batch",
            panel=OUT,
            metavar="",
            help="A batch axis of any size (static: batch 1).",
        ),
    ] = True,
    debug: Debug = False,
) -> None:
    """Export the model to ONNX or TorchScript beside a JSON with its preprocessing and labels,
    then verify it: the exported file and PyTorch on the same images must agree to 1e-4."""
    with handled(debug):
        from ..export import export

        with rendering():
            r = export(run_dir, format=format.value, opset=opset, output=output, images=images,
                       dynamic_batch=dynamic_batch)  # fmt: skip
        typer.echo(
            f"wrote {r.path} ({r.format}{f', opset {r.opset}' if r.opset else ''}) and {r.sidecar}; "
            f"checked on {r.n_images} {r.inputs} inputs: max |logit difference| "
            f"{r.max_abs_diff:.2e}, top-1 agreement {r.top1_agreement:.3f}"
        )


@app.command(
    "eval",
    epilog=examples(
        "finetune eval runs/my-run held-out/",
        "finetune eval runs/my-run labels.csv --tta --output eval-report/",
    ),
)
def eval_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by 'finetune run'.")],
    data: Annotated[
        Path,
        typer.Argument(help="Labelled images: DIR/<class>/*, a folder with test/, or a CSV."),
    ],
    output: Annotated[
        Optional[Path], option("output", panel=OUT, help="Folder (default RUN_DIR/eval-<data>).")
    ] = None,
    tta: Annotated[
        bool, option("tta", "--tta", panel=OUT, metavar="", help="Average with horizontal flips.")
    ] = False,
    top_mistakes: Annotated[
        int, option("top_mistakes", panel=OUT, help="Most confident mistakes to show.")
    ] = 16,
    batch_size: Annotated[int, option("batch_size", panel=OUT, help="Images per batch.")] = 32,
    device: Annotated[
        DeviceChoice, option("device", panel=OUT, help="Device the model runs on.")
    ] = DeviceChoice.cpu,
    debug: Debug = False,
) -> None:
    """Score a run on labelled images: accuracy, balanced accuracy, macro F1, per-class table,
    confusion matrix, calibration (ECE), ROC/PR for binary and multi-label data, the most
    confident mistakes; eval.json, predictions.csv and PNGs in the output folder."""
    with handled(debug):
        from ..evaluation import evaluate
        from ..events import emit

        with rendering():
            r = evaluate(run_dir, data, output=output, tta=tta, batch_size=batch_size,
                         device=device.value, top_mistakes=top_mistakes)  # fmt: skip
            if not r.multilabel:
                title = f"{data} ({r.split}{', TTA' if r.tta else ''})"
                emit("report", report={**r.report, "num_samples": r.num_images}, title=title)
        typer.echo(_eval_summary(r))


def _num(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"


def _eval_summary(r) -> str:
    if r.multilabel:
        head = f"mAP {_num(r.mAP)}, macro AUC {_num(r.macro_auc)}, exact match {_num(r.accuracy)}"
    else:
        head = (f"accuracy {r.accuracy:.4f}, balanced accuracy {r.balanced_accuracy:.4f}, "
                f"macro F1 {r.macro_f1:.4f}")  # fmt: skip
    return (
        f"{r.num_images} images: {head}, ECE {r.ece:.4f}; wrote "
        f"{', '.join(Path(p).name for p in r.files.values())} to {r.output}"
    )
