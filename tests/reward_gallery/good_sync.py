"""A plain function returning a list: 1.0 when the query ends with the label."""


def reward_func(queries, prompts, labels, **kwargs):
    return [float(q.strip().endswith(label.strip())) for q, label in zip(queries, labels)]
