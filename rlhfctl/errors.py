"""One family of errors a user can cause; the CLI turns each into a clean message and an exit code."""

from __future__ import annotations


from typing import Any


def _rebuild(cls: type, args: tuple, state: dict[str, Any]) -> "RlhfctlError":
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class RlhfctlError(Exception):
    """An error with a message meant for the user, not a traceback. Exit code 1."""

    exit_code = 1

    def __reduce__(self) -> tuple:
        # Raised in a Ray worker, an error is pickled to reach the driver. The default pickling calls
        # `cls(*args)`, which breaks for subclasses with keyword-only fields; rebuild without calling __init__.
        return _rebuild, (type(self), self.args, dict(self.__dict__))


class UsageError(RlhfctlError):
    """The command line, a config file or an input file is wrong. Exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    """A flag or config key has a bad value, or fields contradict each other."""


class DataError(UsageError):
    """A dataset is missing, unreadable, lacks a key or has a bad row."""


class RewardError(RlhfctlError):
    """A reward source failed: a server that stays down, a reward_func that raises or breaks the contract.
    `index` is the sample (within the call) the failure is about, where one is; `user_traceback` the user code's
    own traceback (a reward_func.py, an agent's environment), where there is one."""

    index: int | None = None
    user_traceback: str = ""


class NonFiniteError(RlhfctlError):
    """A loss, gradient norm, reward or model output went NaN or infinite: training on it would corrupt the
    weights, so the run stops (or, with --skip-nonfinite-batches, skips the batch)."""


class WorkerError(RlhfctlError):
    """An unexpected exception inside a Ray worker, named by role and type in one line; `remote_traceback` holds
    the worker's traceback, printed with --debug."""

    def __init__(self, message: str, remote_traceback: str = "") -> None:
        super().__init__(message)
        self.remote_traceback = remote_traceback
