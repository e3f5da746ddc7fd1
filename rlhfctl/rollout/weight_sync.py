"""The actor's side of weight sync: its parameters, whole, one at a time (ZeRO-3 gathers each alone and frees it
before the next, so the full model is never held twice), sent to every engine over the sync group or through
Ray's object store. Mixed into PolicyWorker; every actor rank takes part (ZeRO-3 gathers are collective), rank 0
sends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from rlhfctl.models.lora import SyncTensor, base_of, full_shape, merged_tensors
from rlhfctl.rollout.sync_group import BUCKET_BYTES

RAY_BUCKET_BYTES = 64 << 20  # tensors per object-store transfer: few round trips, little held at once


def _output_embedding_name(model: Any) -> str | None:
    """The name of a head tied to the input embeddings: named_parameters() lists a tied weight once, under the
    embedding, but vLLM keeps a head of its own that must be sent explicitly."""
    if not getattr(model.config, "tie_word_embeddings", False):
        return None
    head = model.get_output_embeddings()
    return next((f"{name}.weight" for name, module in model.named_modules() if module is head), None)


def sync_tensors(model: Any) -> list[SyncTensor]:
    """What the engines receive, in sending order: the parameters under the base model's names (with LoRA, the
    merged weights: models/lora.py), then a tied output head under its own name."""
    tensors = merged_tensors(model)
    base = base_of(model)
    head = _output_embedding_name(base)
    if head is not None:
        embed = base.get_input_embeddings().weight
        tensors.append(SyncTensor(head, embed.dtype, full_shape(embed), [embed], lambda: embed.data))
    return tensors


class WeightSender:
    """PolicyWorker's weight-sync methods (self.engine, self.rank set by the worker)."""

    engine: Any
    rank: int
    _sync_group: Any = None

    def weight_meta(self) -> list[tuple[str, str, list[int]]]:
        """(name, dtype, shape) of every tensor sent, in sending order (what the engines allocate to receive)."""
        return [(t.name, str(t.dtype).removeprefix("torch."), t.shape) for t in sync_tensors(self.engine.unwrapped)]

    def named_full_params(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, whole tensor), one tensor gathered at a time; every rank must iterate to the end."""
        for t in sync_tensors(self.engine.unwrapped):
            with self.engine.gathered(t.params):
                yield t.name, t.value()

    def init_weight_sync(self, addr: str, port: int, world_size: int, backend: str) -> None:
        """Rank 0 joins the sync group as its rank 0 (the engines join at the same time)."""
        if self.rank == 0:
            from rlhfctl.rollout.sync_group import open_group

            self._sync_group = open_group(addr, port, 0, world_size, backend)

    def broadcast_weights(self, bucket_bytes: int = BUCKET_BYTES) -> None:
        """Send every parameter to the engines over the sync group, in buckets (sync_group.buckets) copied into one
        flat buffer each as the parameters are gathered; the engines run receive_weights meanwhile."""
        from rlhfctl.rollout.sync_group import broadcast, bucket_buffer, buckets

        meta = self.weight_meta()
        plan = buckets(meta, bucket_bytes)
        params = self.named_full_params()
        for bucket in plan:
            flat = bucket_buffer(meta, bucket) if self.rank == 0 else None
            offset = 0
            for _ in bucket:
                _, tensor = next(params)
                if flat is not None:
                    flat[offset:offset + tensor.numel()].copy_(tensor.detach().reshape(-1))
                offset += tensor.numel()
            if flat is not None:
                broadcast(self._sync_group, flat)
        for _ in params:  # none left; ends the last gather on every rank
            pass

    def send_weights_ray(self, engines: list[Any]) -> None:
        """Send every parameter through Ray's object store, in buckets of about RAY_BUCKET_BYTES; each bucket is
        put once and read by every engine, and the next is put only when all have taken it."""
        import ray

        from rlhfctl.distributed.roles import call, get
        from rlhfctl.rollout.engine import VLLMEngine

        if self.rank == 0:
            get([call(e, VLLMEngine.begin_weight_stream) for e in engines])
        bucket: list[tuple[str, torch.Tensor]] = []
        size = 0

        def flush() -> None:
            nonlocal bucket, size
            if bucket:
                ref = ray.put(bucket)
                get([call(e, VLLMEngine.push_weights, ref) for e in engines])
            bucket, size = [], 0

        try:
            for name, tensor in self.named_full_params():
                if self.rank != 0:
                    continue
                bucket.append((name, tensor.detach().clone()))
                size += tensor.numel() * tensor.element_size()
                if size >= RAY_BUCKET_BYTES:
                    flush()
            if self.rank == 0:
                flush()
        finally:
            if self.rank == 0:
                get([call(e, VLLMEngine.end_weight_stream) for e in engines])
