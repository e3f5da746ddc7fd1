"""Returns OpenRLHF's dict: rewards, scores and extra_logs (numpy here, to show arrays work too)."""

import numpy as np


def reward_func(queries, prompts, labels, **kwargs):
    correct = np.array([float(q.strip().endswith(label.strip())) for q, label in zip(queries, labels)])
    lengths = np.array([float(len(q) - len(p)) for q, p in zip(queries, prompts)])
    return {"rewards": correct - 0.001 * lengths, "scores": correct, "extra_logs": {"response_length": lengths}}
