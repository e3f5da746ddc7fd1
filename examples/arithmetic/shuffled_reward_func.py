"""The control of the demo: reward_func.py's rewards, shuffled across the samples of each call.

Every call still pays out exactly as many rewards of 1 as there are right answers, but to random samples, so the
reward carries no information about which answer was right. A policy trained on it must not improve; if it did,
the gain of the real run could not be credited to the reward. `extra_logs` stay unshuffled (they report what the
samples really are), so `eval/exact_match` still measures the policy.

    python examples/arithmetic/demo.py --reward-func examples/arithmetic/shuffled_reward_func.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from reward_func import reward_func as exact_match_reward  # noqa: E402

# One generator per process, seeded: a run is repeatable, yet successive calls get different permutations.
_GENERATOR = torch.Generator().manual_seed(1234)


def reward_func(queries: list[str], prompts: list[str], labels: list[str], **kwargs: object) -> dict:
    """reward_func.py's result with "rewards" (and "scores") permuted at random across the batch."""
    result = exact_match_reward(queries, prompts, labels, **kwargs)
    order = torch.randperm(len(queries), generator=_GENERATOR)
    rewards = result["rewards"][order]
    return {"rewards": rewards, "scores": rewards.clone(), "extra_logs": result["extra_logs"]}
