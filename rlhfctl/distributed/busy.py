"""Seconds a worker spent in each named piece of work since they were last read: what it computed, so that
--profile can tell compute from Ray calls and serialization (a phase's wall time minus its busiest worker's).

A worker's host times every method call under the method's name; code inside may time a part of it under a name of
its own (`timed("tokenize")`). Timing costs two perf_counter calls, so it is always on; reading is not. Each host
records into its own table (`recording`), so workers that share a process (roles run in the driver) keep theirs
apart; outside any host, time goes to the process's table (`take`)."""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

_PROCESS: dict[str, float] = {}
_TABLE: contextvars.ContextVar[dict[str, float]] = contextvars.ContextVar("busy_table", default=_PROCESS)


@contextlib.contextmanager
def recording(table: dict[str, float]) -> Iterator[None]:
    """Time the block's timed() parts into `table` (this thread only)."""
    token = _TABLE.set(table)
    try:
        yield
    finally:
        _TABLE.reset(token)


@contextlib.contextmanager
def timed(name: str) -> Iterator[None]:
    """Add the block's wall seconds to `name` (an exception still counts the time spent)."""
    table = _TABLE.get()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        table[name] = table.get(name, 0.0) + time.perf_counter() - t0


def take(table: dict[str, float] = _PROCESS) -> dict[str, float]:
    """The seconds per name since the last take(), and a fresh start."""
    out = dict(table)
    table.clear()
    return out
