"""One family of errors a user can cause; the CLI turns each into a clean message and an exit code."""

from __future__ import annotations


class RlhfctlError(Exception):
    """An error with a message meant for the user, not a traceback. Exit code 1."""

    exit_code = 1


class UsageError(RlhfctlError):
    """The command line, a config file or an input file is wrong. Exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    """A flag or config key has a bad value, or fields contradict each other."""


class DataError(UsageError):
    """A dataset is missing, unreadable, lacks a key or has a bad row."""


class RewardError(RlhfctlError):
    """A reward source failed: a server that stays down, a reward_func that raises or breaks the contract."""
