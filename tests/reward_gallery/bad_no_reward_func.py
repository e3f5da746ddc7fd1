"""The function is named `compute_reward`, not `reward_func`."""


def compute_reward(queries, prompts, labels):
    return [float(q.endswith(label)) for q, label in zip(queries, prompts)]
