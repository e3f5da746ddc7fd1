"""CachedReward: identical samples are scored once per batch and, with --reward-cache-size N, remembered across
steps (least recently used first out). GRPO samples many identical responses to one prompt; their rewards are the
same, so the second costs nothing.

Only a source whose reward of a sample depends on that sample alone and never changes is wrapped: it says so with
`cacheable = True` (reward models; reward servers unless their /health says otherwise; a reward_func.py unless its
file sets DETERMINISTIC = False). The key is (query, prompt, label); the rewards, scores and extra_logs returned are
those the source gave, so cached and uncached runs are equal (a local reward model's within fp32 rounding: with
fewer texts its passes are batched differently, which serve-rm's contract bounds by 1e-5). `extra_logs["cache_hit_rate"]` holds 1 for a sample
served from the cache (or a duplicate of one scored in the batch), 0 otherwise: its mean is the batch's hit rate.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Optional

from rlhfctl.rewards.base import RewardBatch, RewardSource, check_batch
from rlhfctl.rewards.contract import RewardFault

Key = tuple[str, str, str]
Entry = tuple[float, Optional[float], dict[str, float]]


class CachedReward(RewardSource):
    """A RewardSource in front of a cacheable one."""

    cacheable = True

    def __init__(self, source: RewardSource, size: int = 0) -> None:
        self.source = source
        self.size = size
        self.name = source.name
        self._lru: OrderedDict[Key, Entry] = OrderedDict()
        self._lock = threading.Lock()

    def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        return self._score(queries, prompts, labels, None)

    def score_chunks(self, queries: list[str], prompts: list[str], labels: list[str], size: int) -> RewardBatch:
        return self._score(queries, prompts, labels, size)

    def _score(self, queries: list[str], prompts: list[str], labels: list[str], chunk: int | None) -> RewardBatch:
        if (empty := check_batch(queries, prompts, labels)) is not None:
            return empty
        keys = list(zip(queries, prompts, labels))
        with self._lock:
            known = {k: self._lru[k] for k in dict.fromkeys(keys) if k in self._lru}
            for key in known:  # used now: the last to go
                self._lru.move_to_end(key)
        fresh = [k for k in dict.fromkeys(keys) if k not in known]
        if fresh:
            where = {k: i for i, k in reversed(list(enumerate(keys)))}  # first index of each key in the batch
            q, p, l = (list(x) for x in zip(*fresh))
            try:
                batch = self.source.score_chunks(q, p, l, chunk) if chunk else self.source.score(q, p, l)
            except RewardFault as fault:
                if fault.index is not None and fault.index < len(fresh):  # back to the caller's numbering
                    fault.index = where[fresh[fault.index]]
                    fault.args = (fault.render(),)
                raise
            scores = batch.scores if batch.scores is not None else [None] * len(fresh)
            for j, key in enumerate(fresh):
                known[key] = (batch.rewards[j], scores[j], {n: v[j] for n, v in batch.extra_logs.items()})
            if self.size:
                with self._lock:
                    for key in fresh:
                        self._lru[key] = known[key]
                    while len(self._lru) > self.size:
                        self._lru.popitem(last=False)
        return self._assemble(keys, known, set(fresh))

    @staticmethod
    def _assemble(keys: list[Key], known: dict[Key, Entry], fresh: set[Key]) -> RewardBatch:
        entries = [known[k] for k in keys]
        seen: set[Key] = set()
        hits = []
        for k in keys:
            hits.append(0.0 if k in fresh and k not in seen else 1.0)
            seen.add(k)
        scores = None
        if any(e[1] is not None for e in entries):
            scores = [e[1] if e[1] is not None else e[0] for e in entries]
        names = sorted({n for e in entries for n in e[2]})
        extra = {n: [e[2].get(n, float("nan")) for e in entries] for n in names}
        extra["cache_hit_rate"] = hits
        return RewardBatch(rewards=[e[0] for e in entries], scores=scores, extra_logs=extra)

    def close(self) -> None:
        self.source.close()


def with_cache(source: RewardSource, size: int, notes: list[str] | None = None) -> RewardSource:
    """`source` behind a CachedReward when it is cacheable; else `source` itself, and a note when a cache size
    was asked for (an option that cannot act says why)."""
    if source.cacheable:
        return CachedReward(source, size)
    if size and notes is not None:
        notes.append(f"--reward-cache-size {size}: {source.name} is not deterministic per sample (a pairwise "
                     "reward, a judge that samples, or a reward_func.py with DETERMINISTIC = False), so its rewards "
                     "are not cached")
    return source
