"""Samples: what a rollout generated, in the layout HF generation gives (models/actor.py): left-padded prompt,
right-padded response, `action_mask` up to and including the first EOS, `truncated` where the response ends
without EOS, queries decoded as one sequence (decode_queries). Batches of different widths join by padding the
prompt part on the left and the response part on the right, so positions keep meaning."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from rlhfctl.distributed.busy import timed
from rlhfctl.models.actor import _ends_with_eos, decode_queries, response_action_mask
from rlhfctl.rewards.base import RewardBatch


def step_seed(seed: int, step: int, rank: int, salt: int) -> int:
    """A seed per (run seed, step, rank, purpose): resumed runs redraw what the uninterrupted run drew."""
    return (seed * 1_000_003 + step * 7919 + rank * 104_729 + salt) % (2**63 - 1)


@dataclass
class Samples:
    """Generated responses for a batch of prompts, before any scoring."""

    sequences: Tensor
    attention_mask: Tensor
    action_mask: Tensor
    prompts: list[str]
    labels: list[str]
    responses: list[str]
    truncated: Optional[Tensor] = None  # [B] bool: cut at --generate-max-len (no EOS)
    # [B, A] log-probs of the sampled tokens as the rollout engine computed them (vLLM); None with HF generate,
    # whose rollout log-probs are the actor's own.
    rollout_log_probs: Optional[Tensor] = None
    queries: list[str] = field(default_factory=list)  # prompt + response decoded as one sequence (the reward's input)
    # --agent-func-path: the rewards the environment gave each episode (and agent/* episode statistics); the
    # response part then holds policy turns (action_mask 1) and environment replies (action_mask 0, attention 1).
    environment: Optional[RewardBatch] = None
    # [B] long: how many policy versions sampled the row's tokens (vLLM engines; 2+ when a weight sync landed
    # mid-generation, --partial-rollout). None where generation never overlaps a sync (HF generate, agents).
    version_span: Optional[Tensor] = None

    def __len__(self) -> int:
        return self.sequences.shape[0]

    @staticmethod
    def concat(parts: list["Samples"], pad_token_id: int) -> "Samples":
        seqs, attn, act = join_sequences([(p.sequences, p.attention_mask, p.action_mask) for p in parts],
                                          pad_token_id)
        truncated = None if any(p.truncated is None for p in parts) else torch.cat([p.truncated for p in parts])
        rollout = None if any(p.rollout_log_probs is None for p in parts) else torch.cat(
            [pad_right(p.rollout_log_probs, act.shape[1], 0) for p in parts])
        return Samples(seqs, attn, act, [x for p in parts for x in p.prompts],
                       [x for p in parts for x in p.labels], [x for p in parts for x in p.responses], truncated,
                       rollout, queries=[x for p in parts for x in p.queries],
                       environment=None if any(p.environment is None for p in parts) else RewardBatch.concat(
                           [p.environment for p in parts if p.environment is not None]),
                       version_span=None if any(p.version_span is None for p in parts) else torch.cat(
                           [p.version_span for p in parts]))

    def select(self, index: list[int]) -> "Samples":
        """The rows `index`, in that order (widths kept)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        pick = (lambda t: None if t is None else t.index_select(0, idx))  # noqa: E731
        return Samples(pick(self.sequences), pick(self.attention_mask), pick(self.action_mask),
                       [self.prompts[i] for i in index], [self.labels[i] for i in index],
                       [self.responses[i] for i in index], pick(self.truncated), pick(self.rollout_log_probs),
                       queries=[self.queries[i] for i in index] if self.queries else [],
                       environment=None if self.environment is None else select_rewards(self.environment, index),
                       version_span=pick(self.version_span))


def select_rewards(batch: RewardBatch, index: list[int]) -> RewardBatch:
    return RewardBatch([batch.rewards[i] for i in index],
                       None if batch.scores is None else [batch.scores[i] for i in index],
                       {k: [v[i] for i in index] for k, v in batch.extra_logs.items()})


def pad_right(t: Tensor, width: int, value: float) -> Tensor:
    return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)


def pad_left(t: Tensor, width: int, value: float) -> Tensor:
    return torch.nn.functional.pad(t, (width - t.shape[1], 0), value=value)


def join_sequences(parts: list[tuple[Tensor, Tensor, Tensor]], pad_token_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Concatenate [prompt | response] batches: prompts left-padded, responses right-padded to common widths."""
    prompt_w = max(s.shape[1] - a.shape[1] for s, _, a in parts)
    action_w = max(a.shape[1] for _, _, a in parts)
    seqs, attn, act = [], [], []
    for s, m, a in parts:
        p = s.shape[1] - a.shape[1]
        seqs.append(torch.cat([pad_left(s[:, :p], prompt_w, pad_token_id), pad_right(s[:, p:], action_w,
                                                                                       pad_token_id)], 1))
        attn.append(torch.cat([pad_left(m[:, :p], prompt_w, 0), pad_right(m[:, p:], action_w, 0)], 1))
        act.append(pad_right(a, action_w, 0))
    return torch.cat(seqs), torch.cat(attn), torch.cat(act)


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
    with timed("tokenize"):
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        queries = decode_queries(tokenizer, prompt_ids, prompt_mask, responses, action_mask, eos_token_id)
    return Samples(sequences, attention_mask, action_mask, prompts, labels, texts, truncated, rollout_log_probs,
                   queries=queries)
