"""--enable-ema: an exponential moving average of the actor's weights, the policy that is saved (OpenRLHF's
ema_model and ``moving_average``).

After every optimizer step each trained parameter's average takes ``ema = beta * ema + (1 - beta) * weights``
(ppo/functional.py's ema_update_), starting from the initial weights. The averages are whole tensors in float32 on
the CPU of rank 0 only: in bf16 a step of (1 - beta) x a small change would round away. Under ZeRO-3 each
parameter is gathered alone for its update, so no rank holds more than one extra whole tensor; every rank takes
part in the gathers. Only trained parameters are averaged (with adapters, the adapters); the rest stay as loaded.
Rollouts sample from the trained weights, not the average, as in OpenRLHF.

Checkpoints hold the averages beside the engine state (EMA_FILE in the actor's folder), so a resumed run goes on
with the same averages; a checkpoint saved without --enable-ema starts them from the resumed weights, with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rlhfctl.ppo.functional import ema_update_

EMA_FILE = "ema.safetensors"


class PolicyEMA:
    """The averaged weights of one actor (the engine's `unwrapped` model); `keep`: this rank holds them."""

    def __init__(self, engine: Any, beta: float, keep: bool) -> None:
        self.engine, self.beta, self.keep = engine, beta, keep
        model = engine.unwrapped
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        by_id = {id(p): n for n, p in model.named_parameters()}
        # state-dict key -> parameter name: a tied head is one parameter under two keys
        self.keys = {k: by_id[id(v)] for k, v in model.state_dict(keep_vars=True).items() if id(v) in by_id}
        self.averages: dict[str, Tensor] = {}
        self.restart()

    def _whole(self) -> Iterator[tuple[str, Tensor]]:
        """(name, whole tensor) of each trained parameter, gathered one at a time (a collective under ZeRO-3)."""
        params = dict(self.engine.unwrapped.named_parameters())
        for name in self.names:
            with self.engine.gathered([params[name]]):
                yield name, params[name].data

    def restart(self) -> None:
        """Averages equal to the current weights."""
        for name, tensor in self._whole():
            if self.keep:
                self.averages[name] = tensor.detach().to("cpu", torch.float32, copy=True)

    def update(self) -> None:
        """One optimizer step's update of every average; call it on every rank after each applied step."""
        for name, tensor in self._whole():
            if self.keep:
                ema_update_(self.averages[name], tensor.detach().cpu(), self.beta)

    def policy_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """`state` (the engine's state dict for save_pretrained) with each trained weight replaced by its average,
        in the dtype `state` holds it in."""
        return {k: self.averages[self.keys[k]].to(v.dtype) if self.keys.get(k) in self.averages else v
                for k, v in state.items()}

    def save(self, folder: str) -> None:
        if self.keep:
            from safetensors.torch import save_file

            Path(folder).mkdir(parents=True, exist_ok=True)
            save_file(self.averages, str(Path(folder) / EMA_FILE), metadata={"beta": str(self.beta)})

    def load(self, folder: str) -> None:
        """The averages saved with the checkpoint in `folder`; every rank calls it."""
        path = Path(folder) / EMA_FILE
        if not path.is_file():
            warnings.warn(f"--enable-ema: the checkpoint {folder} holds no averaged weights (saved without "
                          "--enable-ema); the average starts from the resumed weights", stacklevel=2)
            self.restart()
            return
        if self.keep:
            from safetensors.torch import load_file

            saved = load_file(str(path))
            if set(saved) != set(self.averages):
                from rlhfctl.distributed.engine import EngineError

                raise EngineError(f"{path}: its averaged weights are not this policy's parameters (saved: "
                                  f"{len(saved)} tensors, trained here: {len(self.averages)})")
            self.averages = saved
