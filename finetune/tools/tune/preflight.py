"""What ``finetune tune`` checks once, before its first trial, so that bad input fails in one
line before anything trains: the output folder, the data (its scan, which the trials then read
from the scan cache) and its validation images, and the fixed policy on the backbone (random
weights: nothing downloaded), whose stages the search space's freezing values are checked on.

Regression (the hostile-input pass): ``--data`` of one class, ``--freeze-until nosuch`` or an
``--output`` that is a file failed inside trial 0 and again in each retry (the error printed four
times); with ``--val-split 0`` and no ``val/`` folder every trial trained to its end first.

Example:
    >>> stages = check_before_trials(base, output=Path("runs/tune-x"))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from ...config import FinetuneConfig
from ...errors import ConfigError
from ...validation import check_output_outside_data

__all__ = ["check_before_trials", "check_output"]


def check_before_trials(base: FinetuneConfig, *, output: Path) -> tuple[list[str], set[str]]:
    """Check the output folder, the data and the fixed policy; returns the first module of each
    of the backbone's stages (the head's last) and every module name, for the search space."""
    check_output(output, base.data.path, create=False)
    _check_data(base)
    modules = _backbone_modules(base)
    check_output(output, base.data.path)  # made last: bad data leaves no empty folder behind
    return modules


def check_output(output: Path, data_path, *, create: bool = True) -> None:
    """``output`` can be a study's folder: not a file, not inside the image folder (its runs
    would be read as a class of images by the next scan), and (``create``) made, writable."""
    output = Path(output).expanduser().resolve()
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output} is a file; choose a folder")
    check_output_outside_data(output, data_path)
    if not create:
        return
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--output {output}: cannot create it ({e.strerror or e}); choose a "
                          "folder you can write to") from None  # fmt: skip


def _check_data(base: FinetuneConfig) -> None:
    from ...data.datasets import scan_data

    data = scan_data(base.data.path, base)  # its one-line errors name the folder and the fix
    if not data.val:
        raise ConfigError(f"tune compares trials on validation images and {data.root} has none "
                          "(val_split 0, no val/ folder): add a val/ folder or pass --val-split "
                          "0.15")  # fmt: skip


def _backbone_modules(base: FinetuneConfig) -> tuple[list[str], set[str]]:
    """The backbone built with random weights and the fixed policy applied (an unknown
    ``--freeze-until`` fails here): its stages' first modules and all its module names."""
    from ...api import inspect

    net, report = inspect(base.backbone.name, base, verbose=False)
    return [stage.modules[0] for stage in report.stages], {name for name, _ in net.named_modules()}
