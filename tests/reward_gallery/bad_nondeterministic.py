"""Adds unseeded random noise: the same query gets a different reward each time."""

import random


def reward_func(queries, prompts, labels, **kwargs):
    return [float(q.endswith(label)) + random.random() for q, label in zip(queries, labels)]
