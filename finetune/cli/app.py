"""The typer app, ``--version``, and the entry point ``main``."""

from typing import Annotated, Optional

import typer

from .. import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fine-tune a pretrained ImageNet backbone on your images.",
)


def _version(value: Optional[bool]) -> None:
    if value:
        typer.echo(f"finetune {__version__}")
        raise typer.Exit()


def examples(*lines: str) -> str:
    """A command's help epilog (paragraphs: older typer versions join single lines)."""
    return "\n\n".join(("Examples:",) + lines)


@app.callback()
def _app_options(
    version: Annotated[
        Optional[bool],
        typer.Option(
            "--version", callback=_version, is_eager=True, metavar="", help="Print the version."
        ),
    ] = None,
) -> None:
    """Fine-tune a pretrained ImageNet backbone on your images."""


def main() -> None:
    app()
