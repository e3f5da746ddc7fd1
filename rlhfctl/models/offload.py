"""--ref-reward-offload: a frozen model (reference, reward model) keeps its weights in CPU memory between uses and
moves them to the worker's device only for its forward passes, freeing GPU memory for the trained roles.

On a machine without a GPU the device is the CPU: the moves still run but move nothing (train-ppo says so once at
start). 4-bit weights cannot be moved by `.to()` (bitsandbytes forbids it), so a 4-bit model stays on its GPU.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class Offloader:
    """`with offloader.onloaded(): model(...)`: the model is on `device` inside, on the CPU outside (when enabled).

    `onloads` counts the moves to the device, so a run (and a test) can tell the path ran."""

    def __init__(self, model: nn.Module, device: torch.device, enabled: bool) -> None:
        self.model = model
        self.device = device
        four_bit = any(getattr(m, "is_loaded_in_4bit", False) for m in model.modules())
        self.enabled = enabled and not four_bit
        self.onloads = 0
        if not four_bit:  # bitsandbytes placed it already
            model.to("cpu" if self.enabled else device)

    @contextlib.contextmanager
    def onloaded(self) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        self.model.to(self.device)
        self.onloads += 1
        try:
            yield
        finally:
            self.model.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
