"""`rlhfctl serve-rm` as a subprocess, as users run it: started, its URL read from its log, the log kept."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

ENV = {**{k: v for k, v in os.environ.items() if k != "RLHFCTL_API_KEY"}, "HF_HUB_OFFLINE": "1"}


def rlhfctl(*args: str) -> list[str]:
    return [sys.executable, "-m", "rlhfctl", *args]


def start_server(*args: str, env: dict[str, str] | None = None, startup_s: float = 60,
                 new_session: bool = False) -> tuple[subprocess.Popen, str, list[str]]:
    """Start `serve-rm ARGS` (give --port 0); return the process, its /get_reward URL (from its log) and the log
    lines, which a thread keeps appending to. `new_session`: in a process group of its own, which os.killpg ends
    with its reward workers (a replica that dies whole)."""
    proc = subprocess.Popen(rlhfctl("serve-rm", *args), env=env or ENV, stderr=subprocess.PIPE, text=True,
                            start_new_session=new_session)
    lines: list[str] = []
    deadline = time.monotonic() + startup_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"serving on (http://127\.0\.0\.1:\d+/get_reward)", line)
        if found:
            threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
            return proc, found.group(1), lines
    proc.kill()
    raise AssertionError("serve-rm did not start:\n" + "".join(lines))
