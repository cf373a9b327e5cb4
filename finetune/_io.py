"""Files: atomic writes, the cache folder, and the names of the files a run directory holds.

Every file finetune writes goes through ``atomic_path``: a temporary name in the same folder,
fsynced, then renamed into place, so a crash mid-save never leaves a half-written file and never
loses the previous one.

Example:
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = pathlib.Path(tmp).write_text("hello")
    >>> target.read_text()
    'hello'
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "atomic_path",
    "append_jsonl",
    "write_jsonl",
    "read_run_config",
    "cache_dir",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
    "METRICS_NAME",
    "METRICS_CSV_NAME",
    "TENSORBOARD_DIR",
    "WANDB_DIR",
    "MLFLOW_DIR",
    "PLOTS_DIR",
    "CARD_NAME",
    "EXPORT_DIR",
    "SKIPPED_NAME",
    "LAST_WEIGHTS_NAME",
    "STATE_NAME",
    "TARGETS_NAME",
    "EMA_WEIGHTS_NAME",
    "ADAPTER_DIR",
    "LOCK_NAME",
    "REPLACED_DIR",
    "USER_TENSORS",
    "RUN_FILES",
    "RUN_MARKERS",
]

# The files of a run directory (the output of ``finetune run``), spelled here only.
WEIGHTS_NAME = "model.safetensors"  # the best epoch's weights, timm key names
CONFIG_NAME = "config.json"  # timm's layout plus a "finetune" section
METRICS_NAME = "metrics.jsonl"  # one line per finished epoch
METRICS_CSV_NAME = "metrics.csv"  # the same as a table
TENSORBOARD_DIR = "tensorboard"  # --log tensorboard
WANDB_DIR = "wandb"  # --log wandb
MLFLOW_DIR = "mlruns"  # --log mlflow without MLFLOW_TRACKING_URI
PLOTS_DIR = "plots"  # training curves, confusion matrices
CARD_NAME = "README.md"  # the model card
EXPORT_DIR = "export"  # finetune export's default folder
SKIPPED_NAME = "skipped_files.txt"  # unreadable images the scan left out
LAST_WEIGHTS_NAME = "last.safetensors"  # the latest epoch's weights (for people and tools)
STATE_NAME = "trainer_state.pt"  # what --resume needs; tensors only (weights_only=True)
# a taught run's training targets (train.teacher), scored once: --resume reads them back
TARGETS_NAME = "teacher_targets.safetensors"
EMA_WEIGHTS_NAME = "model_ema.safetensors"
ADAPTER_DIR = "adapter"  # peft adapter and head of the best epoch
LOCK_NAME = ".finetune.lock"  # held by the process writing the run (pid, host)
REPLACED_DIR = ".replaced-run"
# config.json's finetune.preprocessing for a run on tensors a user's Dataset prepared itself
USER_TENSORS = "none: the Dataset gave tensors (prepare inputs the same way before the model)"  # --overwrite: the old run waits here for the new one's first save
# files that make a folder a run (a user's own README.md alone does not)
RUN_MARKERS = (
    WEIGHTS_NAME,
    CONFIG_NAME,
    METRICS_NAME,
    LAST_WEIGHTS_NAME,
    STATE_NAME,
    ADAPTER_DIR,
    EMA_WEIGHTS_NAME,
)
# everything a run writes (what --overwrite replaces)
RUN_FILES = (
    WEIGHTS_NAME,
    CONFIG_NAME,
    METRICS_NAME,
    SKIPPED_NAME,
    LAST_WEIGHTS_NAME,
    STATE_NAME,
    TARGETS_NAME,
    ADAPTER_DIR,
    EMA_WEIGHTS_NAME,
    METRICS_CSV_NAME,
    TENSORBOARD_DIR,
    WANDB_DIR,
    MLFLOW_DIR,
    PLOTS_DIR,
    CARD_NAME,
    EXPORT_DIR,
)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it into place.

    A full disk is one clear ``OSError`` naming the file (the writers say it in their own words:
    ``basic_ios::clear`` from torch.save, ``os error 28`` from safetensors), and the previous file
    at ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        try:
            yield tmp
        except Exception as e:
            if _disk_full(e, path.parent):
                raise OSError(
                    errno.ENOSPC,
                    f"no space left on the disk of {path.parent} while writing {path.name} "
                    f"({shutil.disk_usage(path.parent).free // 2**20} MiB free); free disk space "
                    "and run the command again (the previous file is intact)",
                ) from None
            raise
        # writers may replace the file with their own 0600 one: a run must be readable like
        # any file the user writes
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _disk_full(e: BaseException, folder: Path) -> bool:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return True
    text = str(e)
    if "No space left" in text or "os error 28" in text:
        return True
    # torch.save only says "basic_ios::clear" / "PytorchStreamWriter failed": ask the disk
    return isinstance(e, RuntimeError) and shutil.disk_usage(folder).free < 2**20


def json_line(record: dict[str, Any]) -> str:
    """One line of strict JSON: non-finite numbers become null (``NaN`` is not JSON)."""
    clean = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()
    }
    return json.dumps(clean, allow_nan=False) + "\n"


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON line to ``path`` and flush it to disk."""
    with open(path, "a") as f:
        f.write(json_line(record))
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """Atomically replace ``path`` with one JSON line per record."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(json_line(r) for r in records))


def cache_dir() -> Path:
    """finetune's cache folder: ``$FINETUNE_CACHE``, else ``$XDG_CACHE_HOME/finetune``, else
    ``~/.cache/finetune``."""
    if os.environ.get("FINETUNE_CACHE"):
        return Path(os.environ["FINETUNE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "finetune"


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a run directory; clear errors when it is missing or damaged."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_NAME
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; is {run_dir} the output of 'finetune run'?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); the run directory is damaged") from None
