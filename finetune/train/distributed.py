"""Multi-process training with DistributedDataParallel, started by torchrun.

``torchrun --nproc-per-node N -m finetune run ...`` (or ``finetune run --nproc N``, which calls
torchrun) starts N processes; each reads RANK/WORLD_SIZE/LOCAL_RANK from the environment, joins
the process group (gloo on CPU, nccl on CUDA), trains on its shard of every epoch (a
DistributedSampler; ``batch_size`` is per process, so the global batch is N x batch_size), and
averages gradients. Train metrics are summed over ranks; every rank evaluates the whole val/test
set (identical results, no gather needed); only rank 0 writes the run directory.

Example:
    >>> dist = setup_distributed("cpu")  # doctest: +SKIP
    >>> dist.world, dist.rank, dist.is_main  # doctest: +SKIP
    (2, 0, True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["DistInfo", "setup_distributed", "barrier", "all_reduce_sum", "all_reduce_tensor"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place among the torchrun processes (one process: world 1, rank 0)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def shard(self) -> dict[str, int]:
        """``world`` and ``rank`` as keyword arguments (for ``build_loaders``)."""
        return {"world": self.world, "rank": self.rank}

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup_distributed(device: str) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else a no-op."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistInfo(world, rank, local)


def barrier(info: DistInfo) -> None:
    """Wait for every process (a no-op in one process)."""
    if info.enabled:
        torch.distributed.barrier()


def all_reduce_sum(values: list[float], info: DistInfo, device) -> list[float]:
    """Sum numbers over ranks (train loss/accuracy bookkeeping)."""
    if not info.enabled:
        return values
    return all_reduce_tensor(torch.tensor(values, dtype=torch.float64), info, device).tolist()


def all_reduce_tensor(t: torch.Tensor, info: DistInfo, device) -> torch.Tensor:
    """Sum a CPU tensor over ranks, each having filled its own rows (a no-op in one process)."""
    if not info.enabled:
        return t
    on_device = t.to(device)
    torch.distributed.all_reduce(on_device)
    return on_device.cpu()
