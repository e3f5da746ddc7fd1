"""Start serve-rm for a benchmark and stop it afterwards: `bench-rm --reward-pretrain/--reward-func`.

The server runs as a separate process (`python -m rlhfctl serve-rm`), so it does not share a GIL or CPU
accounting with the load generator, on a free loopback port, with the server options bench-rm was given. It is
stopped with SIGTERM (serve-rm drains and exits) on every way out: the end of the run, an error, Ctrl-C, SIGTERM.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import rlhfctl
from rlhfctl.config import AuthArgs
from rlhfctl.errors import RewardError, UsageError
from rlhfctl.net import free_port

STARTUP_TIMEOUT_S = 600.0  # loading a large reward model on CPU takes minutes
STOP_TIMEOUT_S = 20.0
LOOPBACK = "127.0.0.1"


class SpawnedServer:
    """`with SpawnedServer(config, auth) as url:` runs serve-rm on a free loopback port while the block runs.

    `config` is the serve-rm config file's text (`dump_config`, which leaves the secret out); the API key of `auth`
    goes to the server by environment."""

    def __init__(self, config: str, auth: AuthArgs, *, startup_timeout: float = STARTUP_TIMEOUT_S) -> None:
        self.config = config
        self.auth = auth
        self.startup_timeout = startup_timeout
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="rlhfctl-bench-")
        self._log = Path(self._dir.name) / "serve-rm.log"
        self._previous_sigterm: Any = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/get_reward"

    def __enter__(self) -> str:
        self._trap_sigterm()
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        config = Path(self._dir.name) / "serve-rm.yaml"
        config.write_text(self.config)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(rlhfctl.__file__).parent.parent),
                                                          env.get("PYTHONPATH")]))
        if self.auth.api_key:  # a secret: by environment, never in the file
            env["RLHFCTL_API_KEY"] = self.auth.api_key
        self.port = free_port()
        command = [sys.executable, "-m", "rlhfctl", "serve-rm", "--config", str(config), "--host", LOOPBACK,
                   "--port", str(self.port)]
        with self._log.open("wb") as log:
            # Own session: a Ctrl-C in the terminal reaches bench-rm only, which then stops the server in order.
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.process is not None
        started = time.monotonic()
        while True:
            code = self.process.poll()
            if code is not None:
                error = UsageError if code == 2 else RewardError
                raise error(f"serve-rm exited with code {code} before it was ready:\n{self.log_tail()}")
            if self._healthy():
                return
            if time.monotonic() - started > self.startup_timeout:
                raise RewardError(f"serve-rm was not ready within {self.startup_timeout:g}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=2)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self._log.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join("  " + line for line in text.strip().splitlines()[-lines:]) or "  (no output)"

    def stop(self) -> None:
        """SIGTERM (serve-rm answers what is in flight and exits), then SIGKILL if it does not go in time."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._restore_sigterm()
        self._dir.cleanup()

    def _trap_sigterm(self) -> None:
        """A SIGTERM to bench-rm unwinds like Ctrl-C, so the server is stopped rather than orphaned."""
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
