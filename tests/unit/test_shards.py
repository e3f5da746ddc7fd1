"""Rows spread over workers and servers: contiguous, in order, nothing lost or repeated, sizes within one."""

from __future__ import annotations

import pytest

from rlhfctl.shards import chunks, contiguous_shards


@pytest.mark.parametrize("n", range(0, 13))
@pytest.mark.parametrize("parts", range(1, 6))
def test_contiguous_shards_cover_the_rows_in_order_with_sizes_within_one(n, parts):
    shards = contiguous_shards(n, parts)
    assert len(shards) == parts
    assert [i for s in shards for i in range(n)[s]] == list(range(n))
    sizes = [s.stop - s.start for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_fewer_rows_than_servers_gives_no_empty_shard_when_asked_for_min_n_parts():
    assert all(s.stop > s.start for s in contiguous_shards(2, min(2, 5)))


@pytest.mark.parametrize("n, size", [(0, 3), (1, 3), (7, 3), (9, 3), (5, 1), (4, 10)])
def test_chunks_are_consecutive_and_full_but_the_last(n, size):
    parts = chunks(n, size)
    assert [i for s in parts for i in range(n)[s]] == list(range(n))
    assert all(s.stop - s.start == size for s in parts[:-1]) and all(0 < s.stop - s.start <= size for s in parts)


@pytest.mark.parametrize("call", [lambda: contiguous_shards(4, 0), lambda: chunks(4, 0)])
def test_zero_parts_or_size_is_refused(call):
    with pytest.raises(ValueError):
        call()
