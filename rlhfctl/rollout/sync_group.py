"""The process group that carries the actor's weights to the vLLM engines: actor rank 0 is rank 0, engine i is
rank i + 1. It is a group of its own (its own TCPStore), apart from DeepSpeed's and vLLM's default groups, so
neither side's training or serving collectives see it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch


def open_group(addr: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float = 600.0) -> Any:
    """Join the weight-sync group (blocks until all `world_size` members have joined)."""
    import torch.distributed as dist

    timeout = timedelta(seconds=timeout_s)
    store = dist.PrefixStore("rlhfctl-weight-sync", dist.TCPStore(addr, port, world_size, is_master=rank == 0,
                                                                  timeout=timeout))
    if backend == "nccl":
        return dist.ProcessGroupNCCL(store, rank, world_size)
    return dist.ProcessGroupGloo(store, rank, world_size, timeout)


def broadcast(group: Any, tensor: torch.Tensor) -> None:
    """Rank 0's `tensor` into every member's `tensor` (same shape and dtype everywhere)."""
    import torch.distributed as dist

    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    group.broadcast([tensor], opts).wait()
