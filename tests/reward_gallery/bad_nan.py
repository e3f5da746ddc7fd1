"""Returns NaN for the answers with two digits (a failed parse turned into float("nan"))."""


def reward_func(queries, prompts, labels, **kwargs):
    return [float("nan") if len(label) == 2 else float(q.endswith(label)) for q, label in zip(queries, labels)]
