"""The one interface every reward source speaks: score(queries, prompts, labels) -> RewardBatch."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from rlhfctl.rewards.replicas import ReplicaState


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


class RewardSource(ABC):
    """A reward model, a reward_func.py or a reward server: anything that turns queries into rewards.

    `queries` are full texts (prompt + response), `prompts` the prompts alone, `labels` the dataset labels
    (empty strings where the dataset has none). A failure raises RewardError; it is never a reward of 0.

    Every capability a caller may ask a source about is declared here with its default, so callers read it
    directly; a source that differs overrides it.
    """

    name: str
    """How messages and logs name the source (a path, a URL, a model folder)."""

    cacheable: bool = False
    """A sample's reward depends on (query, prompt, label) alone and never changes, so CachedReward may keep it."""

    pairwise: bool = False
    """A sample's reward compares it with the other responses to its prompt: batches are cut between groups."""

    concurrency: int | None = None
    """How many score() calls a server should run at once (a judge's --judge-concurrency); None: its default."""

    per_sample: bool | None = False
    """A reward_func.py called once per sample, as OpenRLHF v0.11 calls it (None: not known before the first call)."""

    ignored_keys: AbstractSet[str] = frozenset()
    """Dict keys a reward_func.py returned that OpenRLHF ignores too (check-reward warns about them)."""

    @abstractmethod
    def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        """One reward per query, in order."""

    def score_chunks(self, queries: list[str], prompts: list[str], labels: list[str], size: int) -> RewardBatch:
        """Score as train-ppo does, per `size` samples (OpenRLHF calls a reward_func.py per micro-rollout batch); a
        source that is not called in chunks scores the whole batch at once."""
        return self.score(queries, prompts, labels)

    def health(self) -> dict[str, Any]:
        """What serve-rm's /health adds about this source ("status": "degraded" and why); nothing by default."""
        return {}

    def replica_states(self) -> list[ReplicaState]:
        """The replicas this source spreads its requests over, with their counts and state (serve-rm's /metrics
        when it fans out to reward servers itself); none by default."""
        return []

    def close(self) -> None:
        """Release what the source holds (worker processes, connections); nothing by default."""
