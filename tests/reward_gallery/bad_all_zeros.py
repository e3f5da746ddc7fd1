"""Expects the answer inside \\boxed{...}, which the responses never use: every reward is 0."""

import re

BOXED = re.compile(r"\\boxed\{([^}]*)\}")


def reward_func(queries, prompts, labels, **kwargs):
    rewards = []
    for query, label in zip(queries, labels):
        found = BOXED.findall(query)
        rewards.append(float(bool(found) and found[-1].strip() == label.strip()))
    return rewards
