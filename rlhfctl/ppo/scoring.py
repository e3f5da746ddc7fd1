"""Scoring a rollout: prompt + response to the run's reward source, one reward per sample or the run stops.

Shared by every rollout mode and by evaluation. `call` returns the reward's answer or raises its RewardError as
it was raised (the --async-train producer carries it to the driver); `score` applies the reward-failure policy
(ppo/failures.py) in the driver.
"""

from __future__ import annotations

import math
from typing import NoReturn, Optional

from rlhfctl.errors import RewardError, RlhfctlError
from rlhfctl.rollout.samples import Samples
from rlhfctl.ppo.failures import Failures
from rlhfctl.rewards.base import RewardBatch, RewardSource


class Scorer:
    """A reward_func.py is called per --micro-rollout-batch-size prompts' groups (`*_n_samples_per_prompt`
    responses each), as OpenRLHF calls it; other sources get the whole batch."""

    def __init__(self, reward: Optional[RewardSource], failures: Failures, *, micro_rollout_batch_size: int,
                 n_samples_per_prompt: int, eval_n_samples_per_prompt: int) -> None:
        self.reward = reward
        self.failures = failures
        self.micro_rollout_batch_size = micro_rollout_batch_size
        self.n_samples_per_prompt = n_samples_per_prompt
        self.eval_n_samples_per_prompt = eval_n_samples_per_prompt

    def call(self, samples: Samples, evaluation: bool = False) -> RewardBatch:
        """The reward source's answer for prompt + response; a RewardError as it was raised."""
        queries = samples.queries  # prompt + response decoded as one sequence by the worker that generated them
        if len(queries) != len(samples):
            raise RlhfctlError(f"internal: {len(queries)} reward queries for {len(samples)} samples")
        if samples.environment is not None:  # --agent-func-path: the environment rewarded each episode
            return samples.environment
        assert self.reward is not None  # a server, a reward_func.py, the reward-model role (RoleReward), ...
        n = self.eval_n_samples_per_prompt if evaluation else self.n_samples_per_prompt
        return self.reward.score_chunks(queries, samples.prompts, samples.labels, self.micro_rollout_batch_size * n)

    def checked(self, rewards: RewardBatch, samples: Samples) -> RewardBatch:
        """`rewards` when there is one per sample."""
        if len(rewards.rewards) != len(samples):
            raise RewardError(f"step {self.failures.state.step + 1}: {len(rewards.rewards)} rewards for "
                              f"{len(samples)} queries")
        return rewards

    def failed(self, exc: RewardError, samples: Optional[Samples], during: Optional[str] = None) -> NoReturn:
        """The reward-failure policy, for a failure raised by `call` (here or in the producer)."""
        self.failures.reward_failed(exc, samples, during)

    def score(self, samples: Samples, during: Optional[str] = None) -> RewardBatch:
        """Rewards for prompt + response; a failure stops the run after a checkpoint, never a reward of 0.

        `during` names an evaluation being scored (default: the step under way)."""
        try:
            rewards = self.call(samples, evaluation=during is not None)
        except RewardError as exc:
            self.failed(exc, samples, during)
        return self.checked(rewards, samples)


def extra_log_means(rewards: RewardBatch, prefix: str) -> dict[str, float]:
    """The mean of each finite `extra_logs` entry of the reward, keyed `prefix + name`."""
    out = {}
    for name, vals in rewards.extra_logs.items():
        finite = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
        if finite:  # an agent's episode statistics (agent/turns, ...) keep their own name in training
            out[name if name.startswith("agent/") and prefix == "reward/" else prefix + name] = \
                sum(finite) / len(finite)
    return out
