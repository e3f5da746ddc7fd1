"""Splitting n rows: into contiguous shards (one per worker or server) or into chunks of a fixed size.

One place for both, because rows are spread this way by the trainer (prompts to actor workers, texts to reward
workers), the experience (data-parallel shards), the reward client (texts to servers) and the reward-function pool
(micro-rollout batches).
"""

from __future__ import annotations


def contiguous_shards(n: int, parts: int) -> list[slice]:
    """`parts` contiguous slices covering range(n) in order, sizes differing by at most one (some are empty when
    n < parts: take min(n, parts) parts where an empty shard is not wanted)."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, not {parts}")
    bounds = [n * r // parts for r in range(parts + 1)]
    return [slice(bounds[r], bounds[r + 1]) for r in range(parts)]


def chunks(n: int, size: int) -> list[slice]:
    """Consecutive slices of `size` rows covering range(n); the last may be shorter."""
    if size < 1:
        raise ValueError(f"size must be >= 1, not {size}")
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def data_parallel_shards(n: int, workers: int, ring: int = 1) -> list[slice]:
    """Each worker's rows of range(n): contiguous shards, one per ring of `ring` consecutive workers
    (--ring-attn-size: the workers of a ring hold the same rows and split their tokens)."""
    shards = contiguous_shards(n, workers // ring)
    return [shards[rank // ring] for rank in range(workers)]
