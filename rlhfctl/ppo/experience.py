"""Rollout data as it moves through a PPO step: Samples (what was generated) and Experience (what training reads).

Layout, as in OpenRLHF: `sequences`/`attention_mask` are [B, P + A], a left-padded prompt then a right-padded
response; every per-token tensor (`action_mask`, `log_probs`, `ref_log_probs`, `values`, `advantages`, `returns`,
`kl`, `rollout_log_probs`) is [B, A] over the response positions; `rewards` and each `info` entry are [B]. Batches
of different widths are joined by padding the prompt part on the left and the response part on the right, so
positions keep meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Optional

import torch
from torch import Tensor

from rlhfctl.rewards.base import RewardBatch
from rlhfctl.shards import contiguous_shards

# Per-token fields, [B, A]; pad value 0 (the action mask is 0 there, so they never count).
ACTION_FIELDS = ("action_mask", "log_probs", "ref_log_probs", "values", "advantages", "returns", "kl",
                 "rollout_log_probs")


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

    def __len__(self) -> int:
        return self.sequences.shape[0]

    @staticmethod
    def concat(parts: list["Samples"], pad_token_id: int) -> "Samples":
        seqs, attn, act = _join_sequences([(p.sequences, p.attention_mask, p.action_mask) for p in parts],
                                          pad_token_id)
        truncated = None if any(p.truncated is None for p in parts) else torch.cat([p.truncated for p in parts])
        rollout = None if any(p.rollout_log_probs is None for p in parts) else torch.cat(
            [_pad_right(p.rollout_log_probs, act.shape[1], 0) for p in parts])
        return Samples(seqs, attn, act, [x for p in parts for x in p.prompts],
                       [x for p in parts for x in p.labels], [x for p in parts for x in p.responses], truncated,
                       rollout, queries=[x for p in parts for x in p.queries],
                       environment=None if any(p.environment is None for p in parts) else RewardBatch.concat(
                           [p.environment for p in parts if p.environment is not None]))

    def select(self, index: list[int]) -> "Samples":
        """The rows `index`, in that order (widths kept)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        pick = (lambda t: None if t is None else t.index_select(0, idx))  # noqa: E731
        return Samples(pick(self.sequences), pick(self.attention_mask), pick(self.action_mask),
                       [self.prompts[i] for i in index], [self.labels[i] for i in index],
                       [self.responses[i] for i in index], pick(self.truncated), pick(self.rollout_log_probs),
                       queries=[self.queries[i] for i in index] if self.queries else [],
                       environment=None if self.environment is None else _select_rewards(self.environment, index))


@dataclass
class Experience:
    """One PPO training batch: the samples, what the models said about them, and the advantages to follow."""

    sequences: Tensor
    attention_mask: Tensor
    action_mask: Tensor
    log_probs: Tensor
    rewards: Tensor
    ref_log_probs: Optional[Tensor] = None
    values: Optional[Tensor] = None
    advantages: Optional[Tensor] = None
    returns: Optional[Tensor] = None
    kl: Optional[Tensor] = None
    rollout_log_probs: Optional[Tensor] = None
    info: dict[str, Tensor] = field(default_factory=dict)
    kl_loss_coef: float = 0.0  # weight of the KL loss term in the actor loss (--use-kl-loss), this step's kl_coef

    def __len__(self) -> int:
        return self.sequences.shape[0]

    @property
    def num_actions(self) -> int:
        return self.action_mask.shape[1]

    def select(self, index: Tensor | list[int]) -> "Experience":
        """The rows `index`, with columns that are padding in every selected row trimmed away (less compute)."""
        index = torch.as_tensor(index, dtype=torch.long)
        out = self._map(lambda t: t.index_select(0, index))
        out.info = {k: v.index_select(0, index) for k, v in self.info.items()}
        return out.trimmed()

    def trimmed(self) -> "Experience":
        """Drop leading prompt columns and trailing response columns that no row uses."""
        num_prompt = self.sequences.shape[1] - self.num_actions
        used_prompt = self.attention_mask[:, :num_prompt].any(dim=0).nonzero()
        start = int(used_prompt[0]) if len(used_prompt) else num_prompt
        used_actions = self.action_mask.any(dim=0).nonzero()
        keep_actions = int(used_actions[-1]) + 1 if len(used_actions) else 1
        end = num_prompt + keep_actions
        out = replace(self, sequences=self.sequences[:, start:end], attention_mask=self.attention_mask[:, start:end])
        for name in ACTION_FIELDS:
            value = getattr(self, name)
            if value is not None:
                setattr(out, name, value[:, :keep_actions])
        return out

    def micro_batches(self, size: int, generator: torch.Generator | None = None) -> list["Experience"]:
        """Shuffled (when a generator is given) micro-batches of `size` rows; the last may be smaller."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        return [self.select(order[i:i + size]) for i in range(0, n, size)]

    def shard(self, rank: int, world_size: int) -> "Experience":
        """This data-parallel rank's contiguous share of the rows (sizes differ by at most one)."""
        rows = contiguous_shards(len(self), world_size)[rank]
        return self.select(list(range(rows.start, rows.stop)))

    @staticmethod
    def concat(parts: list["Experience"], pad_token_id: int = 0) -> "Experience":
        """Join batches of different prompt and response widths into one (see the module doc for the padding)."""
        seqs, attn, act = _join_sequences([(p.sequences, p.attention_mask, p.action_mask) for p in parts],
                                          pad_token_id)
        width = act.shape[1]
        joined: dict[str, Optional[Tensor]] = {}
        for name in ACTION_FIELDS[1:]:
            values = [getattr(p, name) for p in parts]
            joined[name] = None if any(v is None for v in values) else torch.cat(
                [_pad_right(v, width, 0) for v in values])
        keys = set.intersection(*(set(p.info) for p in parts)) if parts else set()
        info = {k: torch.cat([p.info[k] for p in parts]) for k in sorted(keys)}
        return Experience(seqs, attn, act, rewards=torch.cat([p.rewards for p in parts]), info=info,
                          kl_loss_coef=parts[0].kl_loss_coef if parts else 0.0, **joined)  # type: ignore[arg-type]

    def _map(self, fn) -> "Experience":
        updates = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                updates[f.name] = fn(value)
        return replace(self, **updates)


def _select_rewards(batch: RewardBatch, index: list[int]) -> RewardBatch:
    return RewardBatch([batch.rewards[i] for i in index],
                       None if batch.scores is None else [batch.scores[i] for i in index],
                       {k: [v[i] for i in index] for k, v in batch.extra_logs.items()})


def _pad_right(t: Tensor, width: int, value: float) -> Tensor:
    return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)


def _pad_left(t: Tensor, width: int, value: float) -> Tensor:
    return torch.nn.functional.pad(t, (width - t.shape[1], 0), value=value)


def _join_sequences(parts: list[tuple[Tensor, Tensor, Tensor]], pad_token_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Concatenate [prompt | response] batches: prompts left-padded, responses right-padded to common widths."""
    prompt_w = max(s.shape[1] - a.shape[1] for s, _, a in parts)
    action_w = max(a.shape[1] for _, _, a in parts)
    seqs, attn, act = [], [], []
    for s, m, a in parts:
        p = s.shape[1] - a.shape[1]
        seqs.append(torch.cat([_pad_left(s[:, :p], prompt_w, pad_token_id), _pad_right(s[:, p:], action_w,
                                                                                       pad_token_id)], 1))
        attn.append(torch.cat([_pad_left(m[:, :p], prompt_w, 0), _pad_right(m[:, p:], action_w, 0)], 1))
        act.append(_pad_right(a, action_w, 0))
    return torch.cat(seqs), torch.cat(attn), torch.cat(act)
