"""Samples from token ids a rollout engine returned, in exactly the layout HF generation gives (models/actor.py):
left-padded prompt, right-padded response, `action_mask` up to and including the first EOS, `truncated` where the
response ends without EOS, queries decoded as one sequence (decode_queries)."""

from __future__ import annotations

from typing import Any, Optional

import torch

from rlhfctl.models.actor import _ends_with_eos, decode_queries, response_action_mask
from rlhfctl.ppo.experience import Samples


def build_samples(tokenizer: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, outputs: list[list[int]],
                  prompts: list[str], labels: list[str], eos_token_id: int | list[int] | None,
                  log_probs: Optional[list[list[float]]] = None) -> Samples:
    """One row per output: `prompt_ids`/`prompt_mask` [B, P] are the (left-padded) prompt of each row, `outputs[i]`
    the response token ids of row i (ending with EOS when the engine stopped there), `log_probs[i]` the engine's
    log-prob of each of those tokens."""
    width = max(1, max((len(o) for o in outputs), default=1))
    pad = tokenizer.pad_token_id
    responses = torch.full((len(outputs), width), pad, dtype=torch.long)
    lengths = torch.zeros(len(outputs), width, dtype=torch.long)
    for i, out in enumerate(outputs):
        responses[i, :len(out)] = torch.tensor(out, dtype=torch.long)
        lengths[i, :len(out)] = 1
    action_mask = response_action_mask(responses, eos_token_id) * lengths
    truncated = ~_ends_with_eos(responses, action_mask, eos_token_id)
    responses = responses.masked_fill(action_mask == 0, pad)
    rollout_log_probs = None
    if log_probs is not None:
        rollout_log_probs = torch.zeros(len(outputs), width, dtype=torch.float32)
        for i, lp in enumerate(log_probs):
            rollout_log_probs[i, :len(lp)] = torch.tensor(lp, dtype=torch.float32)
        rollout_log_probs = rollout_log_probs * action_mask
    sequences = torch.cat([prompt_ids, responses], dim=1)
    attention_mask = torch.cat([prompt_mask, action_mask], dim=1)
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    queries = decode_queries(tokenizer, prompt_ids, prompt_mask, responses, action_mask, eos_token_id)
    return Samples(sequences, attention_mask, action_mask, prompts, labels, texts, truncated, rollout_log_probs,
                   queries=queries)
