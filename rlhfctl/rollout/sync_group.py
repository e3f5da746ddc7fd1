"""The process group that carries the actor's weights to the vLLM engines: actor rank 0 is rank 0, worker j of
engine i (tensor-parallel size N) is rank 1 + i * N + j. It is a group of its own (its own TCPStore), apart from
DeepSpeed's and vLLM's default groups, so neither side's training or serving collectives see it.

Weights travel in buckets: consecutive tensors of one dtype flattened into one buffer of up to BUCKET_BYTES, one
broadcast each, because every broadcast costs a round trip whatever its size (a small policy's 40 tensors took 40
of them). Both sides cut the same buckets from the same (name, dtype, shape) list."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import math

import torch

BUCKET_BYTES = 64 << 20  # per broadcast: few round trips, a bounded extra copy of the weights on each side
Meta = list[tuple[str, str, list[int]]]  # (name, dtype, shape) of every tensor sent, in sending order


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


def buckets(meta: Meta, limit_bytes: int = BUCKET_BYTES) -> list[list[int]]:
    """Indices into `meta`, cut into runs of one dtype of at most `limit_bytes` (a larger tensor goes alone)."""
    out: list[list[int]] = []
    size, dtype = 0, None
    for i, (_, kind, shape) in enumerate(meta):
        nbytes = math.prod(shape) * getattr(torch, kind).itemsize
        if not out or kind != dtype or size + nbytes > limit_bytes:
            out.append([])
            size, dtype = 0, kind
        out[-1].append(i)
        size += nbytes
    return out


def bucket_buffer(meta: Meta, bucket: list[int], device: Any = None) -> torch.Tensor:
    """An empty flat buffer for one bucket's tensors (on `device`: NCCL moves GPU tensors only)."""
    return torch.empty(sum(math.prod(meta[i][2]) for i in bucket), dtype=getattr(torch, meta[bucket[0]][1]),
                       device=device)


def unflatten(meta: Meta, bucket: list[int], flat: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(name, view of `flat` in the tensor's shape) for each tensor of the bucket."""
    out, offset = [], 0
    for i in bucket:
        name, _, shape = meta[i]
        numel = math.prod(shape)
        out.append((name, flat[offset:offset + numel].view(shape)))
        offset += numel
    return out
