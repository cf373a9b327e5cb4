"""After training: ``finetune eval``, ``finetune export`` and ``finetune push``."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import app, examples
from .handling import handled, rendering
from .options import OUT, Debug, option


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
