"""The one interface every reward source speaks: score(queries, prompts, labels) -> RewardBatch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable


@dataclass
class RewardBatch:
    """Rewards for a batch of queries, in order; `scores` and `extra_logs` as OpenRLHF's reward_func may return them."""

    rewards: list[float]
    scores: list[float] | None = None
    extra_logs: dict[str, list[float]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rewards)

    def to_json(self) -> dict:
        """The body of a `/get_reward` answer (OpenRLHF's client reads `rewards`, then `scores`, then `extra_logs`)."""
        return {
            "rewards": list(self.rewards),
            "scores": list(self.scores if self.scores is not None else self.rewards),
            "extra_logs": {k: list(v) for k, v in self.extra_logs.items()},
        }

    @staticmethod
    def concat(batches: Sequence["RewardBatch"]) -> "RewardBatch":
        """Join shards back in order (used where one batch was spread across servers or micro-batches)."""
        rewards = [r for b in batches for r in b.rewards]
        scores = None
        if any(b.scores is not None for b in batches):
            scores = [s for b in batches for s in (b.scores if b.scores is not None else b.rewards)]
        keys = {k for b in batches for k in b.extra_logs}
        extra = {k: [v for b in batches for v in b.extra_logs.get(k, [math.nan] * len(b))] for k in sorted(keys)}
        return RewardBatch(rewards, scores, extra)


def check_batch(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[str]) -> RewardBatch | None:
    """The answer to an empty batch (an empty RewardBatch), or None when there are queries to score; ValueError when
    prompts or labels do not have one entry per query. A reward source's score() starts with it."""
    if not len(queries) == len(prompts) == len(labels):
        raise ValueError(f"queries, prompts and labels differ in length: {len(queries)}, {len(prompts)}, "
                         f"{len(labels)}")
    return RewardBatch(rewards=[]) if not queries else None


@runtime_checkable
class RewardSource(Protocol):
    """A reward model, a reward_func.py or a reward server: anything that turns queries into rewards.

    `queries` are full texts (prompt + response), `prompts` the prompts alone, `labels` the dataset labels
    (empty strings where the dataset has none). A failure raises RewardError; it is never a reward of 0.
    """

    name: str

    def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch: ...

    def close(self) -> None: ...
