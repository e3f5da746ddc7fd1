"""Rollout data as it moves through a PPO step: Samples (what was generated, rollout/samples.py) and Experience
(what training reads).

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

from rlhfctl.rollout.samples import Samples, join_sequences, pad_right
from rlhfctl.shards import data_parallel_shards

__all__ = ["ACTION_FIELDS", "Experience", "Samples"]  # Samples: what a rollout returns (rollout/samples.py)

# Per-token fields, [B, A]; pad value 0 (the action mask is 0 there, so they never count).
ACTION_FIELDS = ("action_mask", "log_probs", "ref_log_probs", "values", "advantages", "returns", "kl",
                 "rollout_log_probs")


@dataclass
class Experience:
    """One PPO training batch: the samples, what the models said about them, and the advantages to follow."""

    sequences: Tensor
    attention_mask: Tensor
    action_mask: Tensor
    log_probs: Optional[Tensor]  # None: the actor's training forward gives them (shaping.old_log_probs_in_training)
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

    def shard(self, rank: int, world_size: int, ring: int = 1) -> "Experience":
        """This worker's contiguous share of the rows (sizes differ by at most one), the same for the `ring`
        consecutive workers of a ring (--ring-attn-size)."""
        rows = data_parallel_shards(len(self), world_size, ring)[rank]
        return self.select(list(range(rows.start, rows.stop)))

    @staticmethod
    def concat(parts: list["Experience"], pad_token_id: int = 0) -> "Experience":
        """Join batches of different prompt and response widths into one (see the module doc for the padding)."""
        seqs, attn, act = join_sequences([(p.sequences, p.attention_mask, p.action_mask) for p in parts],
                                          pad_token_id)
        width = act.shape[1]
        joined: dict[str, Optional[Tensor]] = {}
        for name in ACTION_FIELDS[1:]:
            values = [getattr(p, name) for p in parts]
            joined[name] = None if any(v is None for v in values) else torch.cat(
                [pad_right(v, width, 0) for v in values])
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
