"""A placeholder that was never replaced: 0.5 for everything."""


def reward_func(queries, prompts, labels, **kwargs):
    return [0.5] * len(queries)
