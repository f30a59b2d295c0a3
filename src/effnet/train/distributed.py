"""Distributed data parallel through torchrun: gloo on CPU, NCCL on GPU, one writer (rank 0)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from effnet.errors import UserError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world`` processes and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        """Only the main process writes logs, checkpoints and weights."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def is_main_process() -> bool:
    """Whether this is the process that writes (rank 0 of torchrun's, or the only one), known before
    the process group is joined."""
    return os.environ.get("RANK", "0") == "0"


def check_device(device: str | None) -> torch.device | None:
    """``device`` as a torch.device if this machine has it (None: the default, CUDA where available);
    otherwise a UserError naming ``device``. Nothing is allocated."""
    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device must be cpu, cuda, cuda:N or mps, got {device!r}", field="device")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {device!r} is not available on this machine", field="device")
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"device {device!r} asks for a GPU, but PyTorch sees none on this machine", field="device")
        if parsed.index is not None and parsed.index >= count:
            raise UserError(
                f"device {device!r} does not exist: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}",
                field="device",
            )
    return parsed


def setup(device: str | torch.device | None = None) -> DistContext:
    """Join the process group torchrun describes in the environment (if any) and pick the device: the
    one asked for, on GPUs under torchrun each process's own (``LOCAL_RANK``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    asked = None if device is None else torch.device(device)
    use_cuda = torch.cuda.is_available() if asked is None else asked.type == "cuda"
    if use_cuda:
        index = asked.index if asked is not None and asked.index is not None and world == 1 else local_rank
        torch.cuda.set_device(index)
        dev = torch.device("cuda", index)
    else:
        dev = asked if asked is not None else torch.device("cpu")
    initialized_here = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        initialized_here = True
    if dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    return DistContext(rank=rank, world=world, local_rank=local_rank, device=dev, initialized_here=initialized_here)


def cleanup(ctx: DistContext) -> None:
    """Leave the process group if :func:`setup` joined it."""
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over all processes (a no-op on one)."""
    if ctx.distributed:
        values = values.to(ctx.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
