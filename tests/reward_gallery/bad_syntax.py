"""A missing colon on the def line: a SyntaxError at line 4."""

def reward_func(queries, prompts, labels)
    return [1.0 for _ in queries]
