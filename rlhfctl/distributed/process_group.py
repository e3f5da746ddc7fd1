"""torch.distributed for the training engines: one process group per worker, set up from the environment.

The Ray roles set MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK before a worker builds its engine; a process
with none of them is a world of one.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from rlhfctl.errors import ConfigError, RlhfctlError

_DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")


class EngineError(RlhfctlError):
    """A checkpoint that is missing or was written by an incompatible engine, or a broken distributed set-up."""


def init_distributed(backend: str = "gloo", timeout_s: float = 1800.0) -> tuple[int, int]:
    """Initialise torch.distributed once from the environment; return (rank, world_size).

    Idempotent: an already initialised process group is kept. Reads MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE;
    when none is set this process becomes a world of one over an in-memory store (no port; DeepSpeed needs a
    process group even then). LOCAL_RANK defaults to 0, which DeepSpeed requires. On CPU the backend must be gloo
    (nccl needs CUDA). `timeout_s` bounds how long a collective waits for a missing peer, so a dead worker fails
    the job instead of hanging it.
    """
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if backend == "nccl" and not torch.cuda.is_available():
        raise ConfigError("torch.distributed backend 'nccl' needs CUDA GPUs; use 'gloo' on CPU")
    os.environ.setdefault("LOCAL_RANK", "0")
    timeout = timedelta(seconds=timeout_s)
    present = [k for k in _DIST_ENV if k in os.environ]
    if not present:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        return 0, 1
    if len(present) < len(_DIST_ENV):
        missing = [k for k in _DIST_ENV if k not in os.environ]
        raise EngineError(f"distributed set-up: {', '.join(present)} set but {', '.join(missing)} missing")
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except ValueError as e:
        raise EngineError(f"distributed set-up: RANK and WORLD_SIZE must be integers ({e})") from None
    if world < 1 or not 0 <= rank < world:
        raise EngineError(f"distributed set-up: need 0 <= RANK < WORLD_SIZE, got RANK={rank} WORLD_SIZE={world}")
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, timeout=timeout)
    return rank, world


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def local_device() -> torch.device:
    """This worker's device: GPU LOCAL_RANK when there are GPUs (as DeepSpeed picks it), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    index = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
