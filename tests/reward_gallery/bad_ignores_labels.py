"""Rewards short answers: it never reads the labels, so a wrong answer scores as well as a right one."""


def reward_func(queries, prompts, labels, **kwargs):
    return [1.0 / (1 + len(q) - len(p)) for q, p in zip(queries, prompts)]
