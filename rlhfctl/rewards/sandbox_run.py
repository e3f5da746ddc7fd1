"""One sample in the code sandbox: its folder, its harness process, and its verdict.

The parent only writes the folder, starts the harness (rewards/sandbox_harness.py) the way `Isolation` says, and
reads the per-test verdicts from a file it opened itself outside the folder (the program never sees its path).
Tests the harness did not report count as failed: timed out when the sample ran past its wall-clock bound,
crashed otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rlhfctl.rewards.code_tests import TestSuite
from rlhfctl.rewards.isolation import Isolation

VERDICTS = ("pass", "fail", "timeout", "memory", "crash", "error")
"""A sample's verdict: every test passed; some failed; one ran out of time, memory; crashed (killed by a signal);
or the program failed before its tests ran (no code, a syntax error, an exception or exit at import)."""
HARNESS = Path(__file__).with_name("sandbox_harness.py")


@dataclass(frozen=True)
class Limits:
    """Per test run: wall-clock seconds, CPU seconds, address space in MiB; per sample: processes, and MiB written
    (a file, and the whole folder where isolated)."""

    timeout_s: float = 5.0
    cpu_s: int = 2
    memory_mb: int = 512
    nproc: int = 16
    file_mb: int = 16


@dataclass(frozen=True)
class Outcome:
    passed: int
    total: int
    verdict: str

    @property
    def reward(self) -> float:
        return self.passed / self.total if self.total else 0.0


class SandboxFailure(RuntimeError):
    """The harness itself could not run (not the program's doing): the sandbox is broken, the batch must fail."""


def verdict_of(statuses: list[str]) -> str:
    if statuses and all(s == "pass" for s in statuses):
        return "pass"
    for verdict in ("error", "timeout", "memory", "crash"):
        if verdict in statuses:
            return verdict
    return "fail"


def _write(folder: Path, code: str, suite: TestSuite) -> None:
    (folder / "solution.py").write_text(code)
    (folder / "tests.json").write_text(json.dumps(suite.to_json()))
    shutil.copyfile(HARNESS, folder / "harness.py")


def run_sample(code: str, suite: TestSuite, isolation: Isolation, limits: Limits, root: str) -> Outcome:
    """Run `code` against `suite` in a fresh folder under `root` and process namespace; the folder is removed."""
    folder = Path(tempfile.mkdtemp(prefix="sample-", dir=root))
    try:
        _write(folder, code, suite)
        isolation.prepare(str(folder))
        with tempfile.TemporaryFile() as results, tempfile.TemporaryFile() as errors:
            argv = ["-I", "harness.py", "run", str(results.fileno()), str(limits.timeout_s), str(limits.cpu_s),
                    str(limits.memory_mb), str(limits.nproc), str(limits.file_mb)]
            process = subprocess.Popen(isolation.command(str(folder), argv, limits.file_mb), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=errors, pass_fds=(results.fileno(),),
                                       **isolation.popen_kwargs(str(folder)))
            bound = len(suite) * (limits.timeout_s + 2.0) + 10.0
            try:
                process.wait(bound)
                late = False
            except subprocess.TimeoutExpired:
                late = True
            try:
                os.killpg(process.pid, signal.SIGKILL)  # unshare's group; its namespace's processes die with it
            except OSError:
                pass
            process.wait()
            results.seek(0)
            reported = [json.loads(line) for line in results.read(1 << 20).decode().splitlines() if line.strip()]
            errors.seek(0)
            stderr = errors.read(1 << 16).decode("utf-8", "replace")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    statuses = {r["i"]: r["status"] for r in reported if "i" in r}
    if not statuses and not late and process.returncode != 0:
        raise SandboxFailure(f"the sandbox harness exited with code {process.returncode}: "
                             f"{stderr.strip()[-500:] or 'no message'}")
    missing = "timeout" if late else "crash"
    every = [statuses.get(i, missing) for i in range(len(suite))]
    return Outcome(passed=every.count("pass"), total=len(suite), verdict=verdict_of(every))
