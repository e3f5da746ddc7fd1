"""Takes only the queries, so OpenRLHF's call reward_func(queries, prompts, labels) fails."""


def reward_func(queries):
    return [float(len(q) > 0) for q in queries]
