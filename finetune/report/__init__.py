"""Reports of a run: PNG plots (``plots``) and the README.md model card (``card``).

``write_run_report(run_dir)`` writes both into a run directory; training calls it at the end of
a run, and it is safe to call again (it refreshes the files). matplotlib loads only when a plot
is drawn.

Example:
    >>> from finetune.report import write_run_report
    >>> write_run_report("runs/my-run")  # doctest: +SKIP
    [PosixPath('runs/my-run/plots/curves.png'), ..., PosixPath('runs/my-run/README.md')]
"""

from __future__ import annotations

from .card import model_card, write_run_report
from .plots import (
    confusion_png,
    curves_png,
    mistakes_grid_png,
    per_label_png,
    reliability_png,
    roc_pr_png,
)

__all__ = [
    "model_card",
    "write_run_report",
    "curves_png",
    "confusion_png",
    "roc_pr_png",
    "reliability_png",
    "per_label_png",
    "mistakes_grid_png",
]
