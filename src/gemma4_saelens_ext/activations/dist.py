"""torch.distributed set-up shared by sharded extraction and sharded dataset generation.

Launched by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment), a process joins a gloo (CPU)
or nccl (GPU) group; launched alone it is rank 0 of 1 and no group is created.
"""

from __future__ import annotations

import datetime
import os

import torch

__all__ = ["init_distributed", "barrier"]


def init_distributed() -> tuple[int, int, int, str]:
    """(rank, world_size, local_rank, device). Initializes the process group when launched by torchrun."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available()
    device = f"cuda:{local}" if use_cuda else "cpu"
    if use_cuda:
        torch.cuda.set_device(local)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=60))
    return rank, world, local, device


def barrier(device: str) -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if device.startswith("cuda"):
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


