"""``finetune`` command line: parses flags into a config and calls the API; nothing else.

torch, timm and peft are imported inside the commands, so ``--help`` answers in about a second.
User errors print one red line and exit with code 2; ``--debug`` shows the traceback.
"""

from . import commands, fit, ship, tune  # noqa: F401  (importing them registers their commands)
from .app import app, main

__all__ = ["app", "main"]
