"""Drops the last query: one reward fewer than queries."""


def reward_func(queries, prompts, labels, **kwargs):
    return [float(q.endswith(label)) for q, label in zip(queries[:-1], labels)]
