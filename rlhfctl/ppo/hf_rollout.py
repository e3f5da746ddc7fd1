"""Rollouts with Hugging Face `generate` on the actor workers themselves (--vllm-num-engines 0): whole prompts
per worker, so a prompt's group stays contiguous; no weights to sync."""

from __future__ import annotations

from typing import Optional

from rlhfctl.data import PromptExample
from rlhfctl.distributed.roles import RoleGroup, get
from rlhfctl.ppo.workers import PolicyWorker
from rlhfctl.rollout.samples import Samples
from rlhfctl.shards import contiguous_shards


class HFRollout:
    def __init__(self, actor: RoleGroup[PolicyWorker], pad_token_id: int) -> None:
        self.actor = actor
        self.pad_token_id = pad_token_id

    def generate(self, batch: list[PromptExample], n: int, step: int, evaluation: bool, round: int) -> Samples:
        futures = []
        for rank, s in enumerate(contiguous_shards(len(batch), len(self.actor))):
            prompts = [p.prompt for p in batch[s] for _ in range(n)]
            labels = [p.label for p in batch[s] for _ in range(n)]
            futures.append(self.actor.on(rank, PolicyWorker.generate, prompts, labels, step, evaluation, round))
        return Samples.concat(get(futures), self.pad_token_id)

    def sync_weights(self) -> Optional[float]:
        return None

    def abort(self) -> None:
        """Nothing to abort: HF generate runs only while the trainer waits for it (no --async-train)."""

    def close(self) -> None:
        pass
