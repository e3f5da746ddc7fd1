"""`rlhfctl serve-rm` as a subprocess, as users run it: started, its URL read from its log, the log kept."""

from __future__ import annotations

import re
import subprocess
import threading
import time

from tests.helpers.cli import rlhfctl
from tests.helpers.env import ENV


def start_server(*args: str, env: dict[str, str] | None = None, startup_s: float = 60,
                 new_session: bool = False) -> tuple[subprocess.Popen, str, list[str]]:
    """Start `serve-rm ARGS` (a free port unless ARGS name one); return the process, its /get_reward URL (from its
    log) and the log lines, which a thread keeps appending to. `new_session`: in a process group of its own, which
    os.killpg ends with its reward workers (a replica that dies whole)."""
    if "--port" not in args:
        args = (*args, "--port", "0")
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


def stop_server(proc: subprocess.Popen) -> None:
    """Terminate the server and wait for it (killed if it does not stop in 30 s)."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
