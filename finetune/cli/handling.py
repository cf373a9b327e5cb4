"""How a command ends: user errors as one red line (exit 2), Ctrl-C as one line and exit 130
(during training, how to resume), anything else one line naming a traceback file (exit 1);
events rendered while it runs."""

import contextlib
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Iterator, NoReturn

import typer

# ValueError covers ConfigError/DataError; OSError covers missing files, permissions, full disks;
# FloatingPointError is a diverged training run. Anything else is a bug: one line, and its
# traceback goes to a file (`handled`).
USER_ERRORS = (ValueError, OSError, FloatingPointError)


def _print_error(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False).print(f"[red]error:[/] {escape(message)}", soft_wrap=True)


def _fail(e: BaseException, debug: bool) -> None:
    if debug:
        raise e
    _print_error(str(e))
    raise typer.Exit(2)


def _crash(e: BaseException) -> NoReturn:
    """An unexpected exception: one line naming it, the traceback in a temporary file, exit 1."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(tempfile.gettempdir()) / f"finetune-traceback-{stamp}-{os.getpid()}.txt"
    try:
        path.write_text("".join(traceback.format_exception(type(e), e, e.__traceback__)))
        where = f"traceback written to {path}"
    except OSError:
        where = "traceback not written"
    first = (str(e).splitlines() or [""])[0]
    _print_error(f"{type(e).__name__}: {first} ({where}; --debug or FINETUNE_DEBUG=1 shows it)")
    raise typer.Exit(1)


@contextlib.contextmanager
def handled(debug: bool) -> Iterator[None]:
    """A command's errors as one line: user errors exit 2 (`_fail`), an interrupted training
    130, anything else 1 (`_crash`). ``--debug`` or FINETUNE_DEBUG=1 re-raises instead."""
    debug = debug or os.environ.get("FINETUNE_DEBUG", "") not in ("", "0")
    try:
        yield
    except (typer.Exit, typer.Abort, typer.BadParameter):
        raise
    except USER_ERRORS as e:
        _fail(e, debug)
    except KeyboardInterrupt:  # outside a training loop (its own: Interrupted, below)
        # regression: typer ended it with exit 130 and not a word (a study's start, its files)
        typer.echo("interrupted (Ctrl-C)", err=True)
        raise typer.Exit(130) from None
    except Exception as e:
        if type(e).__name__ == "Interrupted":  # Ctrl-C during training: the run is resumable
            typer.echo(str(e), err=True)
            raise typer.Exit(130) from None
        if debug:
            raise
        _crash(e)


def rendering():
    """Render the library's events and warnings on stdout while a command runs."""
    from ..render import reporting

    return reporting(verbose=True)
