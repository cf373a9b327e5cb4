"""After training: ``finetune eval``, ``finetune export`` and ``finetune push``."""

from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from .app import app, examples
from .handling import handled, rendering
from .options import OUT, Debug, option

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
