"""Showing that calls ran at the same time without timing them (a loaded machine stretches any time bound): each
call waits, up to 3 s, for a second call to start, and logs when it started and ended; the calls overlapped iff the
last start came before the first end. One at a time, the first call waits out its 3 s alone."""

from __future__ import annotations

from pathlib import Path

# Source of `meet(spans)`, for the reward functions the tests write to files (they run in other processes).
MEET = '''
def meet(spans):
    import time
    started = time.time()
    with open(spans, "a") as f:
        f.write(f"start {started}\\n")
    while time.time() < started + 3 and open(spans).read().count("start") < 2:
        time.sleep(0.01)
    with open(spans, "a") as f:
        f.write(f"end {time.time()}\\n")
'''


def overlapped(spans: str | Path) -> bool:
    """Did the calls that logged to `spans` run at the same time?"""
    times: dict[str, list[float]] = {"start": [], "end": []}
    for line in Path(spans).read_text().splitlines():
        kind, at = line.split()
        times[kind].append(float(at))
    return max(times["start"]) < min(times["end"])
