"""CombinedReward: several named reward sources, one reward: the weighted sum (--reward NAME=SOURCE:WEIGHT).

Each source scores the whole batch (in parallel, one thread per source); its own reward is logged as
`extra_logs[NAME]` (train-ppo: reward/NAME) and its extra_logs as NAME/KEY. A failure names the source it came
from. It is deterministic per sample, and so cacheable, when every source is.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Callable

from rlhfctl.errors import RewardError
from rlhfctl.rewards.base import RewardBatch, RewardSource, check_batch
from rlhfctl.rewards.contract import RewardFault

if TYPE_CHECKING:
    from rlhfctl.rewards.replicas import ReplicaState


class CombinedReward(RewardSource):
    """The weighted sum of named RewardSources."""

    def __init__(self, terms: list[tuple[str, float, RewardSource]]) -> None:
        self.terms = terms
        self.name = "combined reward " + " + ".join(f"{w:g} x {name}" for name, w, _ in terms)
        self.cacheable = all(source.cacheable for _, _, source in terms)
        self.pairwise = any(source.pairwise for _, _, source in terms)
        self._pool = ThreadPoolExecutor(len(terms), thread_name_prefix="reward-term") if len(terms) > 1 else None

    def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        return self._combine(queries, prompts, labels, lambda s: s.score(queries, prompts, labels))

    def score_chunks(self, queries: list[str], prompts: list[str], labels: list[str], size: int) -> RewardBatch:
        return self._combine(queries, prompts, labels, lambda s: s.score_chunks(queries, prompts, labels, size))

    def _combine(self, queries: list[str], prompts: list[str], labels: list[str],
                 call: Callable[[RewardSource], RewardBatch]) -> RewardBatch:
        if (empty := check_batch(queries, prompts, labels)) is not None:
            return empty
        jobs = [(name, source) for name, _, source in self.terms]
        if self._pool is None:
            batches = [self._one(name, source, call, len(queries)) for name, source in jobs]
        else:
            futures = [self._pool.submit(self._one, name, source, call, len(queries)) for name, source in jobs]
            batches = [f.result() for f in futures]  # the first failing source, in the order given, is reported
        total = [0.0] * len(queries)
        extra: dict[str, list[float]] = {}
        for (name, weight, _), batch in zip(self.terms, batches):
            total = [t + weight * r for t, r in zip(total, batch.rewards)]
            extra[name] = list(batch.rewards)
            extra.update({f"{name}/{key}": list(values) for key, values in batch.extra_logs.items()})
        return RewardBatch(rewards=total, extra_logs=extra)

    @staticmethod
    def _one(name: str, source: RewardSource, call: Callable[[RewardSource], RewardBatch], n: int) -> RewardBatch:
        try:
            batch = call(source)
        except RewardFault as fault:  # keep kind and index (train-ppo skips a NaN batch by them)
            fault.where = f"reward {name!r} ({fault.where})"
            fault.args = (fault.render(),)
            raise
        except RewardError as exc:
            raise type(exc)(f"reward {name!r} ({source.name}): {exc}") from None
        if len(batch.rewards) != n:
            raise RewardError(f"reward {name!r} ({source.name}): {len(batch.rewards)} rewards for {n} queries")
        return batch

    def replica_states(self) -> list[ReplicaState]:
        """Each term's replicas, named by the term."""
        return [replace(state, reward=name) for name, _, source in self.terms for state in source.replica_states()]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for _, _, source in self.terms:
            source.close()
