"""Sequence packing (--packing-samples): a micro-batch's samples as ONE row without padding.

A padded batch [B, P + A] (left-padded prompts, right-padded responses) spends compute on pad tokens; packed, the
real tokens of every row are laid end to end in a [1, T] row with position ids restarting at 0 for each sample.
Attention must stay within each sample: transformers (5.x) reads restarting position ids with no attention mask as
packed sequences, and builds a block-diagonal causal mask (eager uses it) or calls flash-attention's varlen kernel,
to which `forward_kwargs` hands the cumulative lengths (`cu_seq_lens_*`). sdpa (what runs on CPU) gets them too: a
dense block-diagonal mask over T tokens costs T^2 attention, more than the padded batch's B x longest^2, so
`sdpa_varlen` runs causal sdpa on each sample's slice instead (sum of length^2, no mask), installed as transformers'
"sdpa" attention; a call without `cu_seq_lens_q` (padded batches, generate) goes to transformers' own sdpa unchanged.
`gather_actions`/`scatter_actions` map per-token outputs back to the padded [B, A] layout the losses read, so nothing
downstream changes. With --ring-attn-size, `ring_forward` runs a worker's share of the row and the ring's attention
(models/ring_attention.py) comes in through the same attention functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rlhfctl.errors import ConfigError
from rlhfctl.models.ring_attention import RingChunk, RingGroup, gather, ring_attention


@dataclass
class PackedRows:
    """A padded batch laid out as one row, with the index that maps outputs back to the action positions."""

    input_ids: Tensor  # [1, T]: every row's real tokens, end to end
    position_ids: Tensor  # [1, T]: 0, 1, ... restarting per sample (the padded path's positions of those tokens)
    cu_seqlens: Tensor  # [B + 1] int32: where each sample starts in the row, then T (flash-attention varlen)
    max_seqlen: int
    action_index: Tensor  # [B, A]: the packed position whose output predicts action j of row b (0 where invalid)
    action_valid: Tensor  # [B, A] bool: that action token is real (not response padding)


def pack(sequences: Tensor, attention_mask: Tensor, num_actions: int) -> PackedRows:
    """Pack the rows of `sequences` [B, P + A] by `attention_mask`; the output at a token predicts the next one, so
    action j of row b (column P + j) is read from the packed place of column P + j - 1."""
    mask = attention_mask.bool()
    lengths = mask.sum(dim=1)
    if bool((lengths == 0).any()):
        raise ValueError("cannot pack a row with no real token (its attention mask is all 0)")
    starts = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    positions = mask.long().cumsum(dim=1) - 1  # a token's place within its sample, as position_ids() gives it
    packed_place = starts[:-1].unsqueeze(1) + positions  # [B, P + A], meaningful where mask is 1
    width = sequences.shape[1]
    before = packed_place[:, width - num_actions - 1:width - 1]
    valid = mask[:, width - num_actions:] & mask[:, width - num_actions - 1:width - 1]
    return PackedRows(
        input_ids=sequences[mask].unsqueeze(0),
        position_ids=positions[mask].unsqueeze(0),
        cu_seqlens=starts.to(torch.int32),
        max_seqlen=int(lengths.max()),
        action_index=before.masked_fill(~valid, 0),
        action_valid=valid,
    )


def forward_kwargs(model: Any, packed: PackedRows) -> dict[str, Any]:
    """The keyword arguments of a packed forward of an HF model (or its base): ids, restarting positions, no mask.

    With flash-attention 2 the cumulative lengths go to its varlen kernel as well; that kernel exists on CUDA only,
    so asking for it on tensors elsewhere is an error that says so rather than a crash inside the kernel."""
    kwargs: dict[str, Any] = {"input_ids": packed.input_ids, "position_ids": packed.position_ids,
                              "attention_mask": None, "use_cache": False}
    impl = attention_name(model)
    if impl == "sdpa":
        install_sdpa_varlen()
        kwargs.update(cu_seq_lens_q=packed.cu_seqlens, max_length_q=packed.max_seqlen)
    elif impl == "flash_attention_2":
        if packed.input_ids.device.type != "cuda":
            raise ConfigError("--packing-samples with --flash-attn runs flash-attention's varlen kernel, which needs "
                              f"a CUDA GPU; these tensors are on {packed.input_ids.device.type} (leave out "
                              "--flash-attn: packing then uses a block-diagonal mask with sdpa)")
        cu = packed.cu_seqlens.to(packed.input_ids.device)
        kwargs.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=packed.max_seqlen,
                      max_length_k=packed.max_seqlen)
    return kwargs


def attention_name(model: Any) -> str | None:
    """The attention implementation of an HF model, or of the one a DeepSpeed engine wraps (`.module`)."""
    inner = getattr(model, "module", model)
    return getattr(getattr(inner, "config", None), "_attn_implementation", None)


def gather_actions(outputs: Tensor, packed: PackedRows) -> Tensor:
    """The packed row's outputs [1, T, ...] at the real action positions only, [N, ...] (row-major order), so the
    vocabulary-wide work after the model (log-softmax, entropy) runs on real tokens, not on padding."""
    return outputs[0][packed.action_index[packed.action_valid]]


def scatter_actions(values: Tensor, packed: PackedRows) -> Tensor:
    """[N, ...] per real action token (gather_actions' order) -> the padded [B, A, ...] layout, 0 on padding."""
    out = values.new_zeros(*packed.action_valid.shape, *values.shape[1:])
    out[packed.action_valid] = values
    return out


@dataclass(frozen=True)
class RingShard:
    """This worker's share of a packed row: the model's keyword arguments and how to gather outputs back."""

    chunk: RingChunk
    kwargs: dict[str, Any]
    next_tokens: Tensor  # [length]: the token after each of this worker's tokens in the row (what its output predicts)
    total: int  # real tokens in the row (the padding that makes it divide by R is dropped after gathering)

    def gather_tokens(self, local: Tensor) -> Tensor:
        """[length, ...] per-token outputs of this worker -> [total, ...] for the whole row (differentiable)."""
        return gather(local, self.chunk.ring, 0)[: self.total]


def span(rows: PackedRows, ring: RingGroup) -> tuple[int, int]:
    """(first token, tokens) of this worker's share of `rows`: R equal spans of the row padded to a multiple of R."""
    length = -(-rows.input_ids.shape[1] // ring.size)
    return ring.rank * length, length


def shard(rows: PackedRows, ring: RingGroup) -> RingShard:
    """Cut `rows` (one packed row) into R equal spans, padding its end; this worker's span as model arguments.

    The padding is a sample of its own (pad id 0, positions from 0), so no real token attends to it."""
    ids, positions = rows.input_ids[0], rows.position_ids[0]
    total = ids.numel()
    start, length = span(rows, ring)
    pad = length * ring.size - total
    bounds = rows.cu_seqlens.tolist()
    if pad:
        ids = torch.cat([ids, ids.new_zeros(pad)])
        positions = torch.cat([positions, torch.arange(pad, dtype=positions.dtype, device=positions.device)])
        bounds.append(total + pad)
    chunk = RingChunk(ring, tuple(bounds), start, length)
    kwargs = {"input_ids": ids[start:start + length].unsqueeze(0),
              "position_ids": positions[start:start + length].unsqueeze(0),
              "attention_mask": None, "use_cache": False, "ring_chunk": chunk}
    following = torch.cat([ids[1:], ids.new_zeros(1)])[start:start + length]
    return RingShard(chunk, kwargs, following, total)


def ring_forward(model: Any, rows: PackedRows, ring: RingGroup, **extra: Any) -> tuple[Any, RingShard]:
    """Run `model` (an HF model or its base) on this worker's share of `rows` (with `extra` keyword arguments);
    its output and the shard.

    The ring's attention goes in through transformers' attention functions; a model whose code does not call them
    (its own attention) would attend within this worker's span alone, so that is an error, not a wrong result."""
    impl = attention_name(model)
    if impl not in ("sdpa", "flash_attention_2"):
        raise ConfigError(f"--ring-attn-size splits attention through transformers' sdpa or flash-attention "
                          f"functions; this model uses {impl!r} attention")
    install_sdpa_varlen(impl)
    part = shard(rows, ring)
    out = model(**part.kwargs, **extra)
    layers = getattr(model, "module", model).config.to_dict().get("num_hidden_layers")
    if layers is not None and len(part.chunk.calls) != layers:
        raise ConfigError(f"--ring-attn-size: {len(part.chunk.calls)} of {type(model).__name__}'s {layers} layers "
                          "attend through transformers' attention functions; the others (their own attention, or "
                          "none) would see this worker's tokens alone (use --ring-attn-size 1)")
    return out, part


_installed: set[str] = set()


def install_sdpa_varlen(name: str = "sdpa") -> None:
    """Route transformers' `name` attention ("sdpa", or "flash_attention_2" on GPUs) through `packed_attention`;
    idempotent. Calls without a packed row's or a ring's arguments go to the original function unchanged."""
    if name in _installed:
        return
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    original = ALL_ATTENTION_FUNCTIONS[name]

    def attention(module: Any, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                  **kwargs: Any) -> tuple[Tensor, Any]:
        return packed_attention(original, module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register(name, attention)
    _installed.add(name)


def packed_attention(original: Any, module: Any, query: Tensor, key: Tensor, value: Tensor,
                     attention_mask: Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     is_causal: bool | None = None, **kwargs: Any) -> tuple[Tensor, Any]:
    """A ring's share of a row (`ring_chunk`: models/ring_attention.py); else for one packed row with
    `cu_seq_lens_q` on sdpa, causal sdpa over each sample's slice (`sdpa_varlen`); else `original`.

    query/key/value are [1, heads, T, head_dim]; the result is [1, T, heads, head_dim], as transformers' attention
    functions return it."""
    chunk = kwargs.pop("ring_chunk", None)
    if chunk is not None:
        return ring_attention(module, query, key, value, chunk, dropout=dropout, scaling=scaling), None
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if original is sdpa_attention_forward and kwargs.get("cu_seq_lens_q") is not None and query.shape[0] == 1 \
            and query.shape[2] == key.shape[2]:
        return sdpa_varlen(module, query, key, value, dropout=dropout, scaling=scaling, **kwargs), None
    return original(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                    is_causal=is_causal, **kwargs)


def sdpa_varlen(module: Any, query: Tensor, key: Tensor, value: Tensor, dropout: float = 0.0,
                scaling: float | None = None, **kwargs: Any) -> Tensor:
    """Causal sdpa over each sample's slice of one packed row (`cu_seq_lens_q`)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu = kwargs.pop("cu_seq_lens_q")
    for name in ("cu_seq_lens_k", "max_length_q", "max_length_k"):
        kwargs.pop(name, None)
    bounds = cu.tolist()
    parts = [sdpa_attention_forward(module, query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], None,
                                    dropout=dropout, scaling=scaling, is_causal=True, **kwargs)[0]
             for s, e in zip(bounds[:-1], bounds[1:])]
    return torch.cat(parts, dim=1)
