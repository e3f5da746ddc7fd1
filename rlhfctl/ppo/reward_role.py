"""The reward-model role (--reward-pretrain, Ray workers) seen by the trainer as one RewardSource."""

from __future__ import annotations

from rlhfctl.distributed.roles import RoleGroup, get
from rlhfctl.ppo.workers import RewardModelWorker
from rlhfctl.rewards.base import RewardBatch, RewardSource, check_batch
from rlhfctl.rewards.groups import group_shards


class RoleReward(RewardSource):
    """Scores on the reward-model workers, the batch split between prompt groups (a pairwise model compares the
    samples of one prompt, so a group must reach one worker whole)."""

    def __init__(self, group: RoleGroup[RewardModelWorker], name: str, *, pairwise: bool) -> None:
        self.group = group
        self.name = name
        self.pairwise = pairwise
        self.cacheable = not pairwise

    def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        if (empty := check_batch(queries, prompts, labels)) is not None:
            return empty
        shards = group_shards(prompts, len(self.group))
        return RewardBatch.concat(get([self.group.on(rank, RewardModelWorker.score, queries[s], prompts[s], labels[s])
                                       for rank, s in enumerate(shards)]))

    def close(self) -> None:
        """Nothing: the workers belong to the run's placement, released with it."""
