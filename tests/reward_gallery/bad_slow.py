"""Sleeps a second per call, as if waiting on a judge model: too slow for a short --timeout."""

import time


def reward_func(queries, prompts, labels, **kwargs):
    time.sleep(1.0)
    return [float(q.endswith(label)) for q, label in zip(queries, labels)]
