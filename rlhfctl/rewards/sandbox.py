"""SandboxReward: the share of a label's tests that the code in a response passes, each sample run in isolation.

The program comes from the response (rewards/code_tests.py), the tests from the label; each sample runs in its own
folder and namespaces (rewards/isolation.py, found to work when the source opens, else refused without
--sandbox-unsafe), at most `workers` samples at once, under rlimits (rewards/sandbox_run.py). Every sample's
verdict is logged: extra_logs `verdict_pass`, `verdict_fail`, ... are 1 for its verdict and 0 for the others, so
their means are the shares, and `tests` is its number of tests.
"""

from __future__ import annotations

import logging
import shutil
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from rlhfctl.errors import UsageError
from rlhfctl.rewards.base import RewardBatch, RewardSource, check_batch
from rlhfctl.rewards.code_tests import LabelError, extract_code, parse_tests
from rlhfctl.rewards.contract import RewardFault
from rlhfctl.rewards.isolation import Isolation, detect
from rlhfctl.rewards.pairwise import response_of
from rlhfctl.rewards.sandbox_run import VERDICTS, Limits, Outcome, SandboxFailure, run_sample

if TYPE_CHECKING:
    from rlhfctl.config.verify_groups import SandboxArgs

log = logging.getLogger(__name__)


class SandboxReward(RewardSource):
    """Model-written code run against tests, one isolated process tree per sample, `workers` samples at once."""

    # RewardSource capabilities: a verdict can depend on timing (a program near its time limit), so never cached.
    cacheable = False
    pairwise = False
    per_sample: bool | None = False
    ignored_keys: frozenset[str] = frozenset()

    def __init__(self, *, workers: int = 2, limits: Limits = Limits(), unsafe: bool = False,
                 isolation: Isolation | None = None) -> None:
        if isolation is None:
            try:
                isolation = detect(unsafe)
            except RuntimeError as exc:
                raise UsageError(f"the code sandbox cannot isolate samples here ({exc}): it needs unprivileged user "
                                 "namespaces and util-linux's unshare; --sandbox-unsafe runs model code without "
                                 "them (rlimits and a private folder only)") from None
        if not isolation.isolated:
            log.warning("code sandbox WITHOUT isolation (--sandbox-unsafe): %s", isolation.reason)
        self.isolation = isolation
        self.limits = limits
        self.workers = workers
        self.concurrency: int | None = workers
        self.name = "sandbox" + ("" if isolation.isolated else " (unsafe)")
        self.root = isolation.make_root()
        self._remove_root = weakref.finalize(self, shutil.rmtree, self.root, True)  # at exit, if never closed
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix="sandbox")

    def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        if (empty := check_batch(queries, prompts, labels)) is not None:
            return empty
        outcomes = list(self._threads.map(self._one, range(len(queries)), queries, prompts, labels))
        extra = {f"verdict_{v}": [float(o.verdict == v) for o in outcomes] for v in VERDICTS}
        extra["tests"] = [float(o.total) for o in outcomes]
        return RewardBatch(rewards=[o.reward for o in outcomes], extra_logs=extra)

    def _one(self, index: int, query: str, prompt: str, label: str) -> Outcome:
        try:
            suite = parse_tests(label)
        except LabelError as exc:
            raise RewardFault(f"the label holds no tests the sandbox can run: {exc}", kind="label",
                              where=self.name, index=index) from None
        code = extract_code(response_of(query, prompt))
        if not code.strip():
            return Outcome(0, len(suite), "error")
        try:
            return run_sample(code, suite, self.isolation, self.limits, self.root)
        except SandboxFailure as exc:
            raise RewardFault(str(exc), kind="sandbox", where=self.name, index=index) from None

    def health(self) -> dict[str, Any]:
        return {"sandbox": "isolated" if self.isolation.isolated else "unsafe"}

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        self._remove_root()

    def __getstate__(self) -> dict[str, Any]:
        """Ship the settings (a Ray worker finds its own isolation and folder)."""
        return {"workers": self.workers, "limits": self.limits, "unsafe": not self.isolation.isolated}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]


def open_sandbox(args: SandboxArgs) -> SandboxReward:
    """The sandbox with --sandbox-workers, --sandbox-timeout, the --sandbox-* limits and --sandbox-unsafe."""
    limits = Limits(timeout_s=args.sandbox_timeout, cpu_s=args.sandbox_cpu_s, memory_mb=args.sandbox_memory_mb,
                    nproc=args.sandbox_nproc, file_mb=args.sandbox_file_mb)
    return SandboxReward(workers=args.sandbox_workers, limits=limits, unsafe=args.sandbox_unsafe)
