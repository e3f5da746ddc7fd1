"""Returns {"reward": ...} instead of {"rewards": ...}."""


def reward_func(queries, prompts, labels, **kwargs):
    values = [float(q.endswith(label)) for q, label in zip(queries, labels)]
    return {"reward": values, "score": values}
