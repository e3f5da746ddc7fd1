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
downstream changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rlhfctl.errors import ConfigError


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
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
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


def gather_actions(outputs: Tensor, packed: PackedRows) -> Tensor:
    """The packed row's outputs [1, T, ...] at the real action positions only, [N, ...] (row-major order), so the
    vocabulary-wide work after the model (log-softmax, entropy) runs on real tokens, not on padding."""
    return outputs[0][packed.action_index[packed.action_valid]]


def scatter_actions(values: Tensor, packed: PackedRows) -> Tensor:
    """[N, ...] per real action token (gather_actions' order) -> the padded [B, A, ...] layout, 0 on padding."""
    out = values.new_zeros(*packed.action_valid.shape, *values.shape[1:])
    out[packed.action_valid] = values
    return out


_sdpa_varlen_installed = False


def install_sdpa_varlen() -> None:
    """Make transformers' "sdpa" attention run packed rows sample by sample (`sdpa_varlen`); idempotent."""
    global _sdpa_varlen_installed
    if _sdpa_varlen_installed:
        return
    from transformers import AttentionInterface

    AttentionInterface.register("sdpa", sdpa_varlen)
    _sdpa_varlen_installed = True


def sdpa_varlen(module: Any, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                dropout: float = 0.0, scaling: float | None = None, is_causal: bool | None = None,
                **kwargs: Any) -> tuple[Tensor, None]:
    """transformers' sdpa attention; for one packed row with `cu_seq_lens_q`, causal sdpa over each sample's slice.

    query/key/value are [1, heads, T, head_dim]; the result is [1, T, heads, head_dim], as sdpa_attention_forward
    returns it."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu = kwargs.pop("cu_seq_lens_q", None)
    for name in ("cu_seq_lens_k", "max_length_q", "max_length_k"):
        kwargs.pop(name, None)
    if cu is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    bounds = cu.tolist()
    parts = [sdpa_attention_forward(module, query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], None,
                                    dropout=dropout, scaling=scaling, is_causal=True, **kwargs)[0]
             for s, e in zip(bounds[:-1], bounds[1:])]
    return torch.cat(parts, dim=1), None
