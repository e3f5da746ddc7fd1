"""`rlhfctl ARGS` as a process forked from one that imported rlhfctl's heavy dependencies once.

A subprocess spends about 5 CPU seconds importing torch, transformers, DeepSpeed and Ray before it parses its first
flag; the suite starts dozens of train-ppo runs, on a 2-core CI machine. A fork of a process that already imported
them (multiprocessing's forkserver, preloaded) starts in milliseconds and is still a process of its own: its own
environment, working directory, stdout and stderr, exit code, signals (SIGINT, SIGKILL) and torch.distributed state,
and its atexit handlers run at its end as a subprocess's do. What it cannot have is a different environment at import
time (HF_HUB_CACHE, for instance): runs that need one stay real subprocesses (tests.helpers.cli.run_rlhfctl).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from tests.helpers.env import ENV, ROOT

# What `python -m rlhfctl train-ppo ...` imports before its first step, and what Ray's driver imports.
PRELOAD = ["tests.helpers.forked_preload"]

_context: Optional[multiprocessing.context.ForkServerContext] = None


def _forkserver() -> multiprocessing.context.ForkServerContext:
    """The context whose forkserver preloaded PRELOAD, started in the tests' ENV (not in the environment of the test
    that happens to be the first to run rlhfctl, which may have set HF_HUB_CACHE for itself)."""
    global _context
    if _context is None:
        from multiprocessing import forkserver

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(ENV)
        try:
            forkserver.ensure_running()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        _context = context
    return _context


def _child(args: list[str], env: dict[str, str], cwd: str, stdout: str, stderr: str, sigint_ignored: bool) -> None:
    """The forked process: `rlhfctl ARGS` as `python -m rlhfctl` would run it, output into the two files."""
    import atexit
    import io
    import warnings

    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), encoding="utf-8", line_buffering=True)
    sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), encoding="utf-8", line_buffering=True,
                                  errors="backslashreplace")
    sys.argv = [str(ROOT / "rlhfctl" / "__main__.py"), *args]
    warnings.resetwarnings()  # Python's defaults, then PYTHONWARNINGS as the environment gives it
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category)
    if "FutureWarning" in env.get("PYTHONWARNINGS", ""):
        warnings.simplefilter("ignore", FutureWarning)
    signal.signal(signal.SIGINT, signal.SIG_IGN if sigint_ignored else signal.default_int_handler)
    code = 0
    try:
        from rlhfctl.cli.app import main

        main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except BaseException:  # what the interpreter prints for an uncaught exception, and its exit status
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


class ForkedRun:
    """A forked `rlhfctl ARGS`, the part of subprocess.Popen that tests use (pid, poll, wait, send_signal, kill)."""

    def __init__(self, args: list[str], env: Optional[dict[str, str]] = None, cwd: Optional[Path] = None,
                 sigint_ignored: bool = False) -> None:
        """`env` (default ENV) may change what the run reads, not what an import reads: the imports are done.
        `sigint_ignored`: started as a script's background job (`... &`) is, with SIGINT ignored."""
        self.args = ["rlhfctl", *args]
        self._dir = tempfile.TemporaryDirectory(prefix="rlhfctl-forked-")
        self.stdout_path = Path(self._dir.name) / "stdout"
        self.stderr_path = Path(self._dir.name) / "stderr"
        self._process = _forkserver().Process(
            target=_child, args=(list(args), dict(env or ENV), str(cwd or os.getcwd()), str(self.stdout_path),
                                 str(self.stderr_path), sigint_ignored), daemon=False)
        self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self) -> Optional[int]:
        return self._process.exitcode

    def poll(self) -> Optional[int]:
        return self._process.exitcode

    def wait(self, timeout: Optional[float] = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self._process.exitcode

    def send_signal(self, sig: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: Optional[float] = None) -> tuple[str, str]:
        """(stdout, stderr) once the run has ended, as Popen.communicate gives them."""
        result = self.result(timeout)
        return result.stdout, result.stderr

    def output(self) -> tuple[str, str]:
        """(stdout, stderr) written so far."""
        read = lambda p: p.read_text(errors="backslashreplace") if p.exists() else ""  # noqa: E731
        return read(self.stdout_path), read(self.stderr_path)

    def result(self, timeout: Optional[float] = None) -> subprocess.CompletedProcess:
        """Wait for the end (killed and TimeoutExpired after `timeout` s) and return what a subprocess.run gives."""
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait(30)
            raise
        finally:
            out, err = self.output()
        self._dir.cleanup()
        return subprocess.CompletedProcess(self.args, self.returncode, out, err)


def run_forked(*args: str, timeout: float = 240, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """`rlhfctl ARGS` run to its end in a forked process, in the tests' ENV."""
    return ForkedRun(list(args), cwd=cwd).result(timeout)


def warm_up() -> float:
    """Start the preloaded forkserver now (seconds it took), so the first run does not pay for it."""
    start = time.perf_counter()
    ForkedRun(["--version"]).result(120)
    return time.perf_counter() - start
