"""Ring attention (--ring-attn-size R): one packed row's tokens split over R workers, attention across the split.
The ring's process groups, its differentiable gather and its attention live here; cutting a packed row into the
workers' shares is models/packing.py's (`ring_forward`).

Sequence parallelism for samples too long for one worker's activations (OpenRLHF's --ring_attn_size with
--packing_samples). The R workers of a ring group hold the same micro-batch; each runs the model on its contiguous
1/R of the packed row (models/packing.py), so activations per worker are 1/R of the row's. Attention is the one
place a token needs the others: each layer gathers the ring's keys and values (--ring-head-stride KV heads at a
time, which bounds the gathered memory) and attends its own queries causally within their sample. Per-token
outputs (a log-prob or a value: one number per token) are gathered back, so every worker of the ring computes the
same loss on the whole row.

Gradients: a gather's backward sums the gradient every ring worker sends for each piece and hands the owner its
piece. Each of the R workers backpropagates the same loss, so a worker's parameter gradient is R times its tokens'
share; the engine's mean over all R x D workers then gives the mean over the D data-parallel groups of the whole
gradient, what unsplit training gives.

Exchanging all keys and values (not a ring of block-wise exchanges) sends the same bytes; what it gives up is the
overlap of communication with compute that ring_flash_attn's CUDA kernels get. It runs on gloo and nccl alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from rlhfctl.errors import ConfigError


@dataclass(frozen=True)
class RingGroup:
    """This worker's ring: the process group of its R workers, its place in it, and KV heads per gather."""

    group: Any  # torch.distributed ProcessGroup
    size: int
    rank: int
    head_stride: int


def check_head_stride(model_path: str, head_stride: int) -> None:
    """Refuse at start, before Ray starts, a --ring-head-stride that does not divide the model's key/value heads."""
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(model_path).to_dict()
    heads = model_config.get("num_key_value_heads") or model_config.get("num_attention_heads")
    if heads is not None and heads % head_stride:
        raise ConfigError(f"--ring-head-stride {head_stride}: the model has {heads} key/value heads, which it does "
                          "not divide; use a divisor of that count")


def role_ring(ring_attn_size: int, workers: int) -> int:
    """The ring size a role runs with: --ring-attn-size where its workers make whole rings; else 1, rows whole
    (the reference, which does not train, may have any number of workers: one runs rows whole)."""
    return ring_attn_size if workers % ring_attn_size == 0 else 1


def make_ring_group(size: int, head_stride: int) -> RingGroup | None:
    """Split the initialised world into rings of `size` consecutive ranks; this worker's ring (None for size 1).

    Every rank must call this, in the same order: torch.distributed creates each group collectively."""
    if size <= 1:
        return None
    rank, world = dist.get_rank(), dist.get_world_size()
    if world % size:
        raise ValueError(f"--ring-attn-size {size} does not divide the {world} workers of this role")
    mine = None
    for first in range(0, world, size):
        group = dist.new_group(list(range(first, first + size)))
        if first <= rank < first + size:
            mine = RingGroup(group, size, rank - first, head_stride)
    return mine


class _Gather(torch.autograd.Function):
    """All-gather along `dim` within the ring; backward: the sum of every worker's gradient, this worker's piece."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, ring: RingGroup, dim: int) -> Tensor:
        ctx.ring, ctx.dim = ring, dim
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(ring.size)]
        dist.all_gather(parts, tensor, group=ring.group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.ring.group)
        return grad.chunk(ctx.ring.size, dim=ctx.dim)[ctx.ring.rank].contiguous(), None, None


def gather(tensor: Tensor, ring: RingGroup, dim: int) -> Tensor:
    """The ring's pieces of `tensor`, joined along `dim` in ring order (differentiable)."""
    return _Gather.apply(tensor, ring, dim)


@dataclass(frozen=True)
class RingChunk:
    """What attention needs to know of the split: sample bounds in the padded row and this worker's span."""

    ring: RingGroup
    bounds: tuple[int, ...]  # each sample's start in the row, then the padded row's length
    start: int  # this worker's first token
    length: int  # tokens per worker
    calls: list[int] = field(default_factory=list, compare=False)  # layers that attended through the ring


# Attention variants a ring would have to carry across its split: refused rather than left out.
UNSUPPORTED = {"sliding_window": "a sliding window", "softcap": "logit soft-capping", "s_aux": "attention sinks"}


def ring_attention(module: Any, query: Tensor, key: Tensor, value: Tensor, chunk: RingChunk,
                   dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> Tensor:
    """Attention of this worker's queries [1, H, L, d] over the ring's keys and values ([1, H_kv, L, d] here),
    causal within each sample; [1, L, H, d] as transformers' attention functions return it.

    A sample's queries on this worker see its earlier keys whole and their own span causally: a lower-right causal
    mask, which sdpa takes as a bias without building the [queries, keys] mask where its kernel allows."""
    from torch.nn.attention.bias import causal_lower_right

    for name, what in UNSUPPORTED.items():
        if kwargs.get(name) is not None:
            raise ConfigError(f"--ring-attn-size: this model's attention uses {what}, which ring attention does not "
                              "carry across the split (use --ring-attn-size 1)")
    kv_heads = key.shape[1]
    per_kv = query.shape[1] // kv_heads
    stride = chunk.ring.head_stride
    if kv_heads % stride:
        raise ValueError(f"--ring-head-stride {stride} does not divide the model's {kv_heads} key/value heads")
    chunk.calls.append(1)
    start, end = chunk.start, chunk.start + chunk.length
    spans = [(s, e) for s, e in zip(chunk.bounds[:-1], chunk.bounds[1:]) if s < end and e > start]
    heads = []
    for h in range(0, kv_heads, stride):
        keys = gather(key[:, h:h + stride], chunk.ring, 2)
        values = gather(value[:, h:h + stride], chunk.ring, 2)
        queries = query[:, h * per_kv:(h + stride) * per_kv]
        parts = []
        for s, e in spans:
            q0, q1 = max(s, start), min(e, end)
            out = torch.nn.functional.scaled_dot_product_attention(
                queries[:, :, q0 - start:q1 - start], keys[:, :, s:q1], values[:, :, s:q1],
                attn_mask=causal_lower_right(q1 - q0, q1 - s), dropout_p=dropout, scale=scaling,
                enable_gqa=per_kv > 1)
            parts.append(out.transpose(1, 2))
        heads.append(torch.cat(parts, dim=1))
    return torch.cat(heads, dim=2)
