"""What rlhfctl adds to vLLM's worker (`worker_extension_cls`): an in-place weight reload from an iterator.

vLLM's model runner reloads weights in place from (name, tensor) pairs in checkpoint (Hugging Face) format and
consumes the iterator lazily, so weights that arrive one parameter at a time are loaded one at a time: the engine
never holds a second copy of the model. The method must not be called `update_weights` (the CPU worker has one:
vLLM's own weight-transfer API)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class WeightReloader:
    model_runner: Any  # set by vLLM's worker, which this class is mixed into

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
