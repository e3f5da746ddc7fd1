"""DAPO's dynamic sampling (Yu et al. 2025, sec. 3.2; OpenRLHF --dynamic_filtering): train only on prompt groups that
carry a signal, sampling more prompts until the rollout batch is full.

Kept apart from the driver loop so the loop of rounds is tested without Ray: it takes the driver's `generate` and
`score` as functions.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import torch

from rlhfctl.rollout.samples import Samples
from rlhfctl.ppo.functional import dynamic_filter_keep
from rlhfctl.rewards.base import RewardBatch

P = TypeVar("P")


@dataclass
class FilteredRollout:
    samples: Samples
    rewards: RewardBatch
    metrics: dict[str, float]  # dynamic_filtering/{pass_rate, extra_rounds, groups_sampled, padded_groups}
    score_seconds: float
    kept_groups: int


def select_rewards(rewards: RewardBatch, rows: list[int]) -> RewardBatch:
    """The entries `rows` of a reward batch (rewards, scores, extra_logs), in that order."""
    return RewardBatch([rewards.rewards[i] for i in rows],
                       None if rewards.scores is None else [rewards.scores[i] for i in rows],
                       {k: [v[i] for i in rows] for k, v in rewards.extra_logs.items()})


def filtered_rollout(batch: Sequence[P], pool: Sequence[P], generate: Callable[[list[P], int], Samples],
                     score: Callable[[Samples], RewardBatch], *, n_samples_per_prompt: int,
                     reward_range: tuple[float, float], max_rounds: int, world_size: int, rng: random.Random,
                     pad_token_id: int) -> FilteredRollout:
    """Groups of `batch` whose mean score (RewardBatch.scores, else rewards) is strictly inside `reward_range`
    (:func:`dynamic_filter_keep`); while fewer than len(batch) are kept and fewer than `max_rounds` extra rounds
    ran, prompts of `pool` not yet drawn this step are sampled (a multiple of `world_size`, so every actor worker
    gets whole prompts) and filtered the same way. If the batch is still short, dropped groups fill it, so every
    step trains on the same number of samples (their group-baseline advantages are 0 for 0/1 scores).

    `generate(prompts, round)` samples n per prompt (groups contiguous); `score(samples)` scores them.
    """
    n, want = n_samples_per_prompt, len(batch)
    low, high = reward_range
    used = {id(p) for p in batch}
    kept: list[tuple[Samples, RewardBatch]] = []
    dropped: list[tuple[Samples, RewardBatch]] = []
    groups_seen = rounds = 0
    score_seconds = 0.0
    prompts = list(batch)
    while True:
        samples = generate(prompts, rounds)
        t0 = time.perf_counter()
        rewards = score(samples)
        score_seconds += time.perf_counter() - t0
        scores = torch.tensor(rewards.scores if rewards.scores is not None else rewards.rewards, dtype=torch.float64)
        keep = dynamic_filter_keep(scores, n, low, high).tolist()
        groups_seen += len(keep)
        for g, ok in enumerate(keep):
            rows = list(range(g * n, (g + 1) * n))
            (kept if ok else dropped).append((samples.select(rows), select_rewards(rewards, rows)))
        missing = want - len(kept)
        fresh = [p for p in pool if id(p) not in used]
        if missing <= 0 or rounds >= max_rounds or not fresh:
            break
        rounds += 1
        count = min(len(fresh), -(-missing // world_size) * world_size)
        prompts = rng.sample(fresh, count)
        used.update(id(p) for p in prompts)
    padded = max(0, want - len(kept))
    chosen = kept[:want] + dropped[:padded]
    metrics = {"dynamic_filtering/pass_rate": len(kept) / max(1, groups_seen),
               "dynamic_filtering/extra_rounds": float(rounds),
               "dynamic_filtering/groups_sampled": float(groups_seen),
               "dynamic_filtering/padded_groups": float(padded)}
    return FilteredRollout(Samples.concat([c[0] for c in chosen], pad_token_id),
                           RewardBatch.concat([c[1] for c in chosen]), metrics, score_seconds, len(kept))
