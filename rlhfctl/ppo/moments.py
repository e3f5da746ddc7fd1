"""A test hook that makes the moments of a run observable from outside, so a test can interrupt it at one of them.

With RLHFCTL_PHASE_FILE set, the trainer appends "<step> <moment>" to that file as it reaches each named moment
(generate, train, sync, save); with RLHFCTL_PHASE_HOLD="<step> <moment>" as well, it waits there, once, until it is
interrupted, so a Ctrl-C lands at that moment however fast the machine is. Unset (users' runs), nothing happens.
"""

from __future__ import annotations

import os
import time

HOLD_LIMIT_S = 300.0  # a hold nobody interrupts ends, so a broken test fails instead of hanging
_held: set[str] = set()


def reached(step: int, moment: str) -> None:
    """Step `step` (1-based, the step under way) is at `moment`: record it, and hold there if asked."""
    path = os.environ.get("RLHFCTL_PHASE_FILE")
    if not path:
        return
    here = f"{step} {moment}"
    with open(path, "a", encoding="utf-8") as f:
        f.write(here + "\n")
    if os.environ.get("RLHFCTL_PHASE_HOLD") == here and here not in _held:
        _held.add(here)  # the save that Ctrl-C makes reaches "save" again: it must not hold
        deadline = time.monotonic() + HOLD_LIMIT_S
        while time.monotonic() < deadline:
            time.sleep(0.01)
