"""Weight sync's buckets (rollout/sync_group.py): few broadcasts, each of one dtype, and the tensors come back out
of a bucket's flat buffer under their names and shapes."""

from __future__ import annotations

import torch

from rlhfctl.rollout.sync_group import bucket_buffer, buckets, unflatten


def test_buckets_keep_one_dtype_and_stay_within_the_limit_a_larger_tensor_alone():
    meta = [("a", "float32", [4, 4]), ("b", "float32", [4]), ("c", "bfloat16", [8]), ("d", "bfloat16", [2]),
            ("big", "bfloat16", [100]), ("e", "float32", [3])]
    assert buckets(meta, limit_bytes=100) == [[0, 1], [2, 3], [4], [5]]  # 64 + 16 bytes; 16 + 4; 200 alone
    assert buckets(meta[:2], limit_bytes=70) == [[0], [1]]
    assert buckets([]) == []


def test_a_bucket_filled_in_order_gives_back_every_tensor():
    tensors = {"w": torch.randn(3, 5), "b": torch.randn(5), "head": torch.randn(2, 3)}
    meta = [(name, "float32", list(t.shape)) for name, t in tensors.items()]
    (bucket,) = buckets(meta)
    flat = bucket_buffer(meta, bucket)
    assert flat.numel() == 15 + 5 + 6
    flat.copy_(torch.cat([t.reshape(-1) for t in tensors.values()]))
    out = unflatten(meta, bucket, flat)
    assert [name for name, _ in out] == list(tensors)
    assert all(torch.equal(t, tensors[name]) for name, t in out)
