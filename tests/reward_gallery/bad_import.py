"""Imports a module that is not installed."""

import math_verify_not_installed  # noqa: F401


def reward_func(queries, prompts, labels):
    return [0.0 for _ in queries]
