"""A group's prompt runs through the model once: the action logits of rows that share a prompt.

GRPO-style batches hold n samples of each prompt. The unshared forward computes the prompt's keys and values n times
over, and in training backpropagates through each copy. Here the distinct prompts run once (logits of their last
position only), their per-layer keys and values are repeated for each row of the group, and the responses run on
top of that cache. Under autograd the repeat's backward sums the group's gradients into the one prompt forward, so
the gradient is the unshared one (to float rounding). What this saves is (n - 1) / n of the prompt's share of the
tokens, in the experience forward and in training alike.

It applies to causal LMs with a plain per-layer key/value cache (`DynamicLayer`s: no sliding-window layers, no
recurrent state) and position-independent rotary frequencies (not dynamic-NTK or LongRoPE scaling), outside training
with gradient checkpointing (which turns the cache off) or dropout (one mask would serve the group's rows); elsewhere
the caller runs the usual forward.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from rlhfctl.models.capabilities import takes, takes_logits_to_keep, transformers_model


def _rope_types(hf_config: Any) -> set[str]:
    """The rotary scaling kinds a config names (transformers 5's rope_parameters, per layer type or not; before it,
    rope_scaling)."""
    rope = getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {}
    parts = [rope, *(v for v in rope.values() if isinstance(v, dict))] if isinstance(rope, dict) else []
    return {p["rope_type"] for p in parts if isinstance(p.get("rope_type"), str)}


def _has_dropout(model: Any) -> bool:
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())


def _cache_for(model: Any) -> Optional[Any]:
    """An empty DynamicCache of plain layers for this model, or None where the model's cache is of another kind."""
    base = transformers_model(model)
    if not takes(model, "past_key_values"):
        return None
    if base.training and (getattr(base, "is_gradient_checkpointing", False) or _has_dropout(model)):
        return None  # checkpointing layers turn the cache off; dropout would mask a group's rows alike
    if _rope_types(base.config) & {"dynamic", "longrope"}:
        return None  # their frequencies follow each call's longest position
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        cache = DynamicCache(config=base.config)
    except Exception:  # noqa: BLE001 - a config the cache cannot read: run the usual forward
        return None
    return cache if cache.layers and all(type(layer) is DynamicLayer for layer in cache.layers) else None


def action_logits(model: Any, sequences: Tensor, attention_mask: Tensor, num_actions: int,
                  position_ids: Tensor) -> Optional[Tensor]:
    """[B, num_actions, V] logits that predict the last `num_actions` tokens, each distinct prompt (the first
    S - num_actions tokens with their mask) run once; None where no two rows share a prompt or the model's cache does
    not allow it."""
    prompt_len = sequences.shape[1] - num_actions
    if prompt_len == 0:
        return None
    prompts = torch.cat([sequences[:, :prompt_len], attention_mask[:, :prompt_len].to(sequences.dtype)], dim=1)
    unique, group = torch.unique(prompts, dim=0, return_inverse=True)
    if unique.shape[0] == sequences.shape[0]:
        return None
    cache = _cache_for(model)
    if cache is None:
        return None
    representative = torch.empty(unique.shape[0], dtype=torch.long, device=group.device).index_copy_(
        0, group, torch.arange(group.shape[0], device=group.device))  # a row of each distinct prompt
    keep = {"logits_to_keep": 1} if takes_logits_to_keep(model) else {}
    head = model(sequences[representative, :prompt_len], attention_mask=attention_mask[representative, :prompt_len],
                 position_ids=position_ids[representative, :prompt_len], past_key_values=cache, use_cache=True,
                 **keep).logits[:, -1:]
    if cache.get_seq_length() != prompt_len:  # a forward that kept no cache (custom code): run the usual one
        return None
    first = head.index_select(0, group)
    if num_actions == 1:
        return first
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys.index_select(0, group), layer.values.index_select(0, group)
    rest = model(sequences[:, prompt_len:-1], attention_mask=attention_mask[:, :-1],
                 position_ids=position_ids[:, prompt_len:-1], past_key_values=cache, use_cache=True).logits
    return torch.cat([first, rest], dim=1)
