"""DataLoaders with the project's defaults, and the images that fail to load mid-run.

A quick scan reads headers only, a shard is read at its first use, and a file may change on disk
after the scan: an image can fail to decode in the middle of an epoch. The dataset then returns
the next readable sample in its place (``LoadSkips``), so every batch keeps its size and every
DDP rank the same number of steps; the epoch never dies on one image. Each failure is warned
about once (naming the file and why), written to a small log file that the loader's worker
processes share, and reported by the loader at the end of the epoch it happened in
(``load_skips`` lists them all for the run's skipped list).

Example:
    >>> loader = build_loader(dataset, batch_size=32, training=True)  # doctest: +SKIP
    >>> for images, targets in loader: ...  # doctest: +SKIP
    >>> load_skips([loader])  # doctest: +SKIP
    [('photos/cat/7.jpg', 'image file is truncated (3 bytes not processed)')]
"""

from __future__ import annotations

import functools
import os
import secrets
import tempfile
import warnings
import weakref

from ..events import emit

__all__ = ["LoadSkips", "build_loader", "default_num_workers", "load_skips"]


class LoadSkips:
    """The samples of one dataset that failed to load: which indices (this process), and a log
    file every worker process appends to (``index<TAB>name<TAB>reason`` lines)."""

    def __init__(self):
        # the log is created by the first failure, not here. Regression: a process killed
        # mid-run (SIGKILL, a timeout) never runs the finalizer, and every such run left an
        # empty log in the temp folder (44 of them after a day of this project's runs)
        name = f"finetune-load-skips-{os.getpid()}-{secrets.token_hex(8)}.tsv"
        self.path = os.path.join(tempfile.gettempdir(), name)
        weakref.finalize(self, _remove, self.path)  # the main process's object owns the file
        self.bad: set[int] = set()
        self.found: dict[str, str] = {}  # name -> reason, read from the log (main process)
        self._read = 0  # bytes of the log already read

    def record(self, index: int, name: str, reason: str) -> None:
        """Note a sample that failed (warned once per process and index)."""
        if index in self.bad:
            return
        self.bad.add(index)
        reason = " ".join(str(reason).split())[:200]
        warnings.warn(f"skipping unreadable image {name}: {reason}", stacklevel=3)
        clean = " ".join(str(name).split("\t"))  # one line per failure, whatever the name
        # one short append: whole lines, also from workers; never through a planted symlink
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            with os.fdopen(os.open(self.path, flags, 0o600), "a") as f:
                f.write(f"{index}\t{clean}\t{reason}\n".replace("\r", " "))
        except OSError:  # the warning above still names it
            pass

    def new(self) -> list[tuple[str, str]]:
        """Failures logged since the last call, by any process, each name once per run."""
        try:
            with open(self.path) as f:
                f.seek(self._read)
                text = f.read()
        except OSError:
            return []
        complete = text[: text.rfind("\n") + 1]  # a line being written is read next time
        self._read += len(complete.encode())
        fresh = []
        for line in complete.splitlines():
            index, name, reason = (line.split("\t", 2) + ["", ""])[:3]
            if index.isdigit():
                self.bad.add(int(index))  # the next epoch's workers skip it without reading
            if name not in self.found:
                self.found[name] = reason
                fresh.append((name, reason))
        return fresh


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def report_epoch(dataset) -> None:
    """Emit the images that failed to load since the last report (end of an epoch)."""
    skips = getattr(dataset, "load_skips", None)
    fresh = skips.new() if skips is not None else []
    if fresh:
        names = "; ".join(f"{n} ({why})" for n, why in fresh[:5])
        more = f" and {len(fresh) - 5} more" if len(fresh) > 5 else ""
        emit("warning", f"{len(fresh)} unreadable image(s) skipped at load time in this pass, "
                        f"each replaced by the next image: {names}{more}")  # fmt: skip


def load_skips(loaders) -> list[tuple[str, str]]:
    """``(name, reason)`` of every image that failed to load so far in these loaders.

    Example:
        >>> load_skips(loaders.values())  # doctest: +SKIP
        [('shards/train-000001.tar:000123', 'truncated: image file is truncated')]
    """
    found: dict[str, str] = {}
    for loader in loaders:
        skips = getattr(getattr(loader, "dataset", None), "load_skips", None)
        if skips is not None:
            skips.new()
            found.update(skips.found)
    return sorted(found.items())


@functools.cache
def _loader_class():
    """A DataLoader that reports the images skipped at load time when a pass ends (made on first
    use: torch is imported only by the commands that train)."""
    import torch

    class ReportingLoader(torch.utils.data.DataLoader):
        def __iter__(self):
            yield from super().__iter__()
            report_epoch(self.dataset)

    return ReportingLoader


def default_num_workers() -> int:
    """Loader workers: none on <= 2 cores (decoding in workers would steal the cores the model
    needs; measured in bench/), else half the cores up to 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 0 if (cores or 1) <= 2 else min(8, (cores or 1) // 2)


def _ignore_sigint(_worker_id: int) -> None:
    # Ctrl-C is the main process's to handle (it stops at a step boundary and saves); workers
    # that died of it would turn a clean stop into "worker exited unexpectedly"
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_loader(
    dataset,
    *,
    batch_size: int,
    training: bool,
    num_workers: int = -1,
    seed: int = 0,
    pin_memory: bool = False,
    sample_weights=None,
    world: int = 1,
    rank: int = 0,
):
    """A DataLoader with the project's defaults: for training a seeded shuffle by epoch
    (a ``DistributedSampler``, also with one process, so that N processes with batch b see
    exactly the batches one process with batch N*b sees; the Trainer calls ``set_epoch``), or
    with ``sample_weights`` a seeded ``WeightedRandomSampler``; evaluation in order, last partial
    batch kept. Images skipped at load time are reported when a pass over it ends.

    Example:
        >>> loader = build_loader(dataset, batch_size=32, training=True, world=2, rank=1)  # doctest: +SKIP
    """
    import torch

    workers = default_num_workers() if num_workers < 0 else num_workers
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if training and sample_weights is not None:
        if world > 1:
            raise ValueError(
                "data.sampler=balanced is not supported with several processes yet; "
                "use --class-weights auto"
            )
        sampler = torch.utils.data.WeightedRandomSampler(
            sample_weights, num_samples=len(dataset), replacement=True, generator=generator
        )
    elif training:
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed
        )
    return _loader_class()(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        generator=generator,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        worker_init_fn=_ignore_sigint if workers else None,
        drop_last=training and len(dataset) > batch_size * world,
    )
