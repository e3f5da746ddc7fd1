"""How the code sandbox starts a sample's process: in fresh Linux namespaces, found to work at start, or refused.

A sample runs under util-linux's `unshare` in its own user, network (no interfaces but a down loopback), mount and
PID namespaces. Inside, before the harness starts, its folder is copied into a small private tmpfs on /tmp, the
folder holding every sample's folder is covered by an empty one (wherever TMPDIR put it), and every other mount is
made read-only, so nothing is written outside that tmpfs, which vanishes with the namespace; /proc shows only the
sample's own processes. Needs no root where unprivileged user namespaces are allowed. Run as root, the sample is
started as `nobody` first: the kernel exempts root from the process cap (RLIMIT_NPROC), which stops a fork bomb.

Where namespaces are refused (a container without user namespaces, a kernel that forbids them), `detect` says
why, and the sandbox refuses to start unless the user accepts running without them (--sandbox-unsafe: rlimits,
a private folder and a cleared environment only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

UNSHARE = ["unshare", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]
# $1 is the sample's folder (its files are copied into a private tmpfs of $3 MiB, mounted on /tmp), $2 the folder of
# all samples' folders (covered, wherever TMPDIR put it); the rest is the command to run in /tmp. /run is covered
# too: its sockets (docker.sock, D-Bus) answer whoever may open them, and a user's groups survive the namespace.
# Mounts already read-only are left alone, and so are /proc and /sys, whose files only the host's root may write:
# one `mount` per writable mount is most of a sample's start-up.
SETUP = """set -e
cd "$1"
mount -t tmpfs -o size="$3"m,mode=700 sandbox /tmp
cp -R . /tmp/
if [ -d "$2" ]; then mount -t tmpfs -o size=4k,mode=000 hidden "$2"; fi
if [ -d /run ]; then mount -t tmpfs -o size=4k,mode=755 run /run; fi
while read -r _ _ _ _ mp opts _; do
  case "$mp" in /tmp|/run|/proc|/proc/*|/sys|/sys/*) continue;; esac
  case "$opts" in ro|ro,*) continue;; esac
  mount -o remount,bind,ro "$mp" 2>/dev/null || true
done < /proc/self/mountinfo
cd /tmp
shift 3
exec "$@"
"""
NOBODY = 65534
PROBE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Isolation:
    """How to start a sample's process: `isolated` (namespaces) or not, with which interpreter, as which user."""

    isolated: bool
    python: str
    user: int | None = None  # a uid to switch to before starting (root's samples run as nobody)
    reason: str = ""  # why not isolated

    def command(self, folder: str, argv: list[str], folder_mb: int = 16) -> list[str]:
        """The command line that runs `python argv...` on a copy of `folder` (isolated: in a /tmp of `folder_mb`
        MiB, so the host's disk never sees what the program writes)."""
        run = [self.python, *argv]
        hide = os.path.dirname(os.path.abspath(folder))
        return [*UNSHARE, "sh", "-c", SETUP, "sandbox", folder, hide, str(folder_mb), *run] if self.isolated else run

    def popen_kwargs(self, folder: str) -> dict[str, Any]:
        """Working folder, a cleared environment, a session of its own (killed as a group), the user."""
        home = "/tmp" if self.isolated else folder
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        kwargs: dict[str, Any] = {"cwd": folder, "env": env, "start_new_session": True}
        if self.user is not None:
            kwargs.update(user=self.user, group=self.user, extra_groups=[])
        return kwargs

    def make_root(self) -> str:
        """A private folder for the samples' folders: no one lists it, and the sample's user may pass through."""
        root = tempfile.mkdtemp(prefix="rlhfctl-sandbox-")
        os.chmod(root, 0o711)
        return root

    def prepare(self, folder: str) -> None:
        """Give the folder to the user the sample runs as."""
        if self.user is not None:
            os.chown(folder, self.user, self.user)


def _candidates() -> list[str]:
    """Interpreters to try: this one, then the system's (a `nobody` cannot enter /root/.pyenv)."""
    found = [sys.executable, os.path.realpath(sys.executable), shutil.which("python3") or "",
             "/usr/local/bin/python3", "/usr/bin/python3"]
    return [p for i, p in enumerate(found) if p and os.path.exists(p) and p not in found[:i]]


def _works(isolation: Isolation) -> str:
    """"" when a process started this way runs Python in its namespaces, else what went wrong."""
    with tempfile.TemporaryDirectory(prefix="rlhfctl-sandbox-probe-") as folder:
        isolation.prepare(folder)
        code = "import os, socket; socket.create_connection(('127.0.0.1', 9), 1)"
        try:
            done = subprocess.run(isolation.command(folder, ["-I", "-c", code]), capture_output=True, text=True,
                                  timeout=PROBE_TIMEOUT_S, **isolation.popen_kwargs(folder))
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{type(exc).__name__}: {exc}"
    # In a fresh network namespace even loopback is down: "Network is unreachable", not "Connection refused".
    if "Network is unreachable" in done.stderr:
        return ""
    return (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]


def detect(unsafe: bool) -> Isolation:
    """Namespaced isolation where it works here; else, with `unsafe`, none; else RuntimeError saying why."""
    user = NOBODY if os.geteuid() == 0 else None
    problem = "util-linux's unshare is not installed" if shutil.which("unshare") is None else ""
    if not problem:
        for python in _candidates():
            problem = _works(Isolation(True, python, user))
            if not problem:
                return Isolation(True, python, user)
    if unsafe:
        return Isolation(False, sys.executable, None, reason=problem)
    raise RuntimeError(problem)
