"""Returns the rewards as strings ("1.0"), e.g. read back from a subprocess's output."""


def reward_func(queries, prompts, labels, **kwargs):
    return [str(float(q.endswith(label))) for q, label in zip(queries, labels)]
