"""The run directory's life: claimed under a lock, an old run replaced only once the new one has
saved, skipped files listed.

- **Lock.** ``.finetune.lock`` (pid, host, start time) is created with ``O_EXCL`` the moment a
  run claims its directory and removed when the run ends, so two runs with the same ``--output``
  cannot mix their files: the second fails naming the first. A lock left by a process that no
  longer exists on this host is stale and taken over with a warning.
- **Overwrite.** ``--overwrite`` moves the old run's files into ``.replaced-run/``; they are
  deleted once the new run has written its first checkpoint, and moved back if it fails before.
  A folder holding any run file (weights, config, metrics, resume state) counts as a run.

Example:
    >>> with claim_run_dir("runs/x", overwrite=False) as run_dir:  # doctest: +SKIP
    ...     train_into(run_dir)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, Optional

from .._io import (
    LOCK_NAME,
    PLOTS_DIR,
    REPLACED_DIR,
    RUN_FILES,
    RUN_MARKERS,
    SKIPPED_NAME,
    STATE_NAME,
    WEIGHTS_NAME,
    atomic_path,
)
from ..validation import check_output_outside_data

__all__ = [
    "claim_run_dir",
    "shared_run_dir",
    "prepare_run_dir",
    "default_run_dir",
    "write_skipped",
    "RunLocked",
]


class RunLocked(FileExistsError):
    """Another live process writes this run directory."""


def default_run_dir(name: str) -> Path:
    """``runs/<backbone>-<timestamp>``, the backbone name made safe for a folder name."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    return Path("runs") / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


@contextmanager
def claim_run_dir(
    path: str | os.PathLike, *, overwrite: bool = False, resume: bool = False
) -> Iterator[Path]:
    """Lock ``path`` for the block; a new run (not ``resume``) also prepares it (see the module
    docstring for ``overwrite``). A new run that fails removes only files it created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(
            f"output {path} exists and is not a directory; choose another --output"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # regression: "[Errno 20] Not a directory" for --output afile/sub
        raise FileExistsError(f"output {path}: cannot create it ({e.strerror}); choose another "
                              "--output") from None  # fmt: skip
    _lock(path)  # first: a folder a live run holds is "in use", whatever else it holds
    try:
        _recover(path)  # a killed --overwrite run left the old run aside: it comes back
        if not resume:
            _check_target(path, overwrite)
            if overwrite:
                _move_aside(path)
        before = set() if resume else _run_files(path)
        try:
            yield path
        except BaseException:
            if not resume:
                _settle_replaced(path, failed=True, keep=before)
            raise
        _settle_replaced(path, failed=False, keep=before)
    finally:
        (path / LOCK_NAME).unlink(missing_ok=True)


@contextmanager
def shared_run_dir(
    resume, output: Optional[str], backbone: str, *, overwrite: bool, dist, data=None
) -> Iterator[Path]:
    """The run directory for the block: claimed (locked, prepared) by rank 0; every rank gets
    rank 0's path (its timestamp). A new run's may not lie inside ``data``, the image folder."""
    path = Path(resume) if resume else Path(output or default_run_dir(backbone))
    if not resume:  # a resumed run stays where it is (its saved output is relative to its cwd)
        check_output_outside_data(path, data)
    claim = (
        claim_run_dir(path, overwrite=overwrite, resume=bool(resume))
        if dist.is_main
        else nullcontext(path)
    )
    with claim:
        if dist.enabled:
            import torch

            shared = [str(path)]
            torch.distributed.broadcast_object_list(shared, src=0)
            path = Path(shared[0])
        yield path


def prepare_run_dir(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Create the run directory; refuse one that already holds a run unless ``overwrite``, which
    deletes the old run's files at once (``claim_run_dir`` keeps them until the new run saves)."""
    path = Path(path)
    _check_target(path, overwrite)
    path.mkdir(parents=True, exist_ok=True)
    _move_aside(path)
    shutil.rmtree(path / REPLACED_DIR, ignore_errors=True)
    return path


def write_skipped(run_dir: Path, skipped) -> None:
    """``skipped_files.txt``: one ``path<TAB>reason`` line per image the scan left out."""
    if skipped:
        with atomic_path(run_dir / SKIPPED_NAME) as tmp:
            Path(tmp).write_text("".join(f"{p}\t{why}\n" for p, why in skipped))


def _check_target(path: Path, overwrite: bool) -> None:
    held = [n for n in RUN_MARKERS if (path / n).exists()]
    if held and not overwrite:
        raise FileExistsError(
            f"output {path} already holds a run ({', '.join(held)}); "
            "choose another --output or pass --overwrite"
        )
    if not held:  # not a run: files the run would write over are the user's own
        theirs = [n for n in _run_files(path) if n not in (PLOTS_DIR,)]
        if theirs:
            raise FileExistsError(
                f"output {path} has {', '.join(theirs)}, which a run writes; move "
                f"{'them' if len(theirs) > 1 else 'it'} or choose another --output"
            )


def _run_files(path: Path) -> set[str]:
    """The run files (and eval-*/ folders) present in ``path``."""
    names = {n for n in RUN_FILES if (path / n).exists()}
    return names | {p.name for p in path.glob("eval-*") if p.is_dir()}


def _lock(path: Path) -> None:
    lock = path / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    # the content is written first and linked into place: a lock never exists half-written
    # (a full disk or a kill between create and write left an empty lock nobody could judge)
    tmp = path / f"{LOCK_NAME}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(me))
    try:
        for _ in range(2):  # a second try after removing a stale lock
            try:
                os.link(tmp, lock)
                return
            except FileExistsError:
                holder = _read_lock(lock)
                if not _stale(holder):
                    raise RunLocked(
                        f"output {path} is in use by process {holder.get('pid')} on "
                        f"{holder.get('host')} (since {_when(holder)}); wait for it to finish "
                        f"or choose another --output (if that process is gone, delete {lock})"
                    ) from None
                gone = (f"process {holder.get('pid')} that held it is gone" if holder
                        else "it is empty (its process was killed while taking it)")  # fmt: skip
                warnings.warn(f"{lock}: {gone}; taking over")
                lock.unlink(missing_ok=True)
        raise RunLocked(
            f"output {path}: could not take {lock}; another run claimed it at the same time"
        )
    finally:
        tmp.unlink(missing_ok=True)


def _read_lock(lock: Path) -> dict:
    try:
        holder = json.loads(lock.read_text())
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):  # being written right now, or damaged
        return {}


def _stale(holder: dict) -> bool:
    """A lock of this host whose process is gone, or an empty or damaged one (written by no
    finished claim); another host's lock is never judged stale."""
    if not holder:
        return True
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _when(holder: dict) -> str:
    started = holder.get("started")
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"


def _move_aside(path: Path) -> None:
    """Move every file of the old run (its exports and evaluations too) into ``.replaced-run/``:
    nothing of it mixes with the new run."""
    aside = path / REPLACED_DIR
    for name in sorted(_run_files(path)):
        aside.mkdir(exist_ok=True)
        os.replace(path / name, aside / name)


def _recover(path: Path) -> None:
    """A ``.replaced-run/`` left by a killed ``--overwrite`` run: the old run comes back unless
    the new one had saved its weights."""
    if (path / REPLACED_DIR).is_dir():
        warnings.warn(f"{path}: an --overwrite run was killed before it finished; "
                      + ("its first weights are kept" if (path / WEIGHTS_NAME).exists()
                         else "the run it replaced is restored"))  # fmt: skip
        _settle_replaced(path, failed=True, keep=set())


def _settle_replaced(path: Path, *, failed: bool, keep: set[str]) -> None:
    """After a new run. Replacing an old run: the old one goes once the new one has saved its
    weights (a finished epoch), else the new files go and the old run comes back. A new run in a
    fresh folder that failed before saving anything removes what it wrote, so the same command
    runs again. Files in ``keep`` (there before the run) are never touched."""
    aside = path / REPLACED_DIR
    replacing = aside.is_dir()
    weights = (path / WEIGHTS_NAME).exists()
    saved = weights if replacing else weights or (path / STATE_NAME).exists()
    if failed and not saved:
        for name in _run_files(path) - keep:
            target = path / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        if replacing:
            for item in aside.iterdir():
                os.replace(item, path / item.name)
    shutil.rmtree(aside, ignore_errors=True)


def interrupted_message(run_dir: Path) -> str:
    """What Ctrl-C left in ``run_dir`` and how to continue (``finetune.Interrupted``'s text)."""
    weights, state = (run_dir / WEIGHTS_NAME).exists(), (run_dir / STATE_NAME).exists()
    if (run_dir / REPLACED_DIR).is_dir() and not weights:  # --overwrite: the old run comes back
        return (f"interrupted before the new run's first epoch ended: the run it was replacing "
                f"in {run_dir} is restored")  # fmt: skip
    if weights and state:
        return (f"interrupted; the best weights and the resumable state are in {run_dir}: "
                f"continue with 'finetune run --resume {run_dir}'")  # fmt: skip
    if state:
        return (f"interrupted in the first epoch; its resumable state is in {run_dir} (no "
                f"weights yet): continue with 'finetune run --resume {run_dir}'")  # fmt: skip
    return (f"interrupted before the first epoch ended: nothing was saved in {run_dir}; run the "
            "same command again to start over")  # fmt: skip
