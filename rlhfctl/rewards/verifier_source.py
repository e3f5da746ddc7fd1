"""VerifierReward: a built-in verifier (`math`, `exact`, `format`) as a reward source, one sample per call.

The verifier functions (rewards/verifiers.py) run in FunctionPool's worker processes, so the per-sample timeout
really stops a sample stuck in sympy or in a backtracking regex: its process is killed and replaced. A model's
response that makes a verifier hang is the model's failure, not the run's: that sample scores 0 and logs
`timeout` 1; any other fault (a bug in the verifier) still stops the call with its message.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhfctl.rewards import verifiers
from rlhfctl.rewards.base import RewardBatch, RewardSource, check_batch
from rlhfctl.rewards.contract import RewardFault
from rlhfctl.rewards.pool import FunctionPool

if TYPE_CHECKING:
    from rlhfctl.config.verify_groups import VerifierArgs

LOAD_TIMEOUT_S = 60.0  # importing the verifier module (sympy loads on first use, inside a call)


class VerifierReward(RewardSource):
    """One built-in verifier in `workers` worker processes; each sample is its own call, bounded by `timeout`."""

    # RewardSource capabilities (the base class declares them; a verdict depends on the sample alone).
    cacheable = True
    pairwise = False
    per_sample: bool | None = False
    ignored_keys: frozenset[str] = frozenset()

    def __init__(self, kind: str, *, timeout: float, workers: int = 1, options: dict[str, Any] | None = None) -> None:
        self.kind = kind
        self.name = f"verifier {kind}"
        self.timeout = timeout
        self.workers = workers
        self.concurrency: int | None = workers
        self.pool = FunctionPool(Path(verifiers.__file__), function=f"{kind}_reward", timeout=timeout,
                                 workers=workers, batching="batch", load_timeout=LOAD_TIMEOUT_S, options=options)

    def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        if (empty := check_batch(queries, prompts, labels)) is not None:
            return empty
        with ThreadPoolExecutor(min(self.workers, len(queries)), thread_name_prefix=f"verify-{self.kind}") as pool:
            outcomes = list(pool.map(self._one, queries, prompts, labels))
        return RewardBatch(rewards=[reward for reward, _ in outcomes],
                           extra_logs={"timeout": [float(late) for _, late in outcomes]})

    def _one(self, query: str, prompt: str, label: str) -> tuple[float, bool]:
        """(reward, timed out) of one sample."""
        try:
            return self.pool.score([query], [prompt], [label]).rewards[0], False
        except RewardFault as fault:
            if fault.kind != "timeout":
                raise
            return 0.0, True

    def score_chunks(self, queries: list[str], prompts: list[str], labels: list[str], size: int) -> RewardBatch:
        return self.score(queries, prompts, labels)  # already per sample, `workers` at once

    def health(self) -> dict[str, Any]:
        return self.pool.health()

    def close(self) -> None:
        self.pool.close()

    def __repr__(self) -> str:
        return f"VerifierReward({self.kind!r}, timeout={self.timeout}, workers={self.workers})"


def open_verifier(kind: str, args: VerifierArgs) -> VerifierReward:
    """The verifier `kind` with --verifier-timeout, --verifier-workers and (for `format`) --format-regex."""
    options = {"format_regex": args.format_regex} if kind == "format" else {}
    return VerifierReward(kind, timeout=args.verifier_timeout, workers=args.verifier_workers, options=options)
