"""Seconds a process spent in each named piece of work since they were last read: what a worker computed, so that
--profile can tell compute from Ray calls and serialization (a phase's wall time minus its busiest worker's).

A worker's Ray actor times every method call under the method's name; code inside may time a part of it under a
name of its own (`timed("tokenize")`). Timing costs two perf_counter calls, so it is always on; reading is not."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

_SECONDS: dict[str, float] = {}


@contextlib.contextmanager
def timed(name: str) -> Iterator[None]:
    """Add the block's wall seconds to `name` (an exception still counts the time spent)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        _SECONDS[name] = _SECONDS.get(name, 0.0) + time.perf_counter() - t0


def take() -> dict[str, float]:
    """The seconds per name since the last take(), and a fresh start."""
    out = dict(_SECONDS)
    _SECONDS.clear()
    return out
