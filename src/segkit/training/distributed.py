"""torch.distributed set-up for ``torchrun``: rank, world size, and rank-0-only work."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistributedInfo:
    """Join the process group that ``torchrun`` describes in the environment (NCCL on GPU, Gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistributedInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def training_device(requested: str) -> tuple[torch.device, DistributedInfo]:
    """The device this process trains on (its own GPU under ``torchrun``) and its place in the process group."""
    from segkit.device import resolve_device

    device = resolve_device(requested)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    info = init_distributed(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    return device, info


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks in place (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(value):
    """Rank 0's value on every rank (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]
    return value


def cleanup_distributed() -> None:
    """Leave the process group together: a rank that exits while rank 0 still writes its files
    would abort the whole ``torchrun`` job."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
