"""The DeepSpeed training engine (`--engine deepspeed`): ZeRO stage 0-3 around the model, on GPUs or on the CPU
accelerator over gloo."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
from torch import nn

from rlhfctl.distributed.engine import (TrainingEngine, accumulation_steps, make_scheduler, param_groups,
                                        to_bf16, warn_once)
from rlhfctl.distributed.process_group import EngineError, barrier, default_backend, init_distributed
from rlhfctl.errors import ConfigError


def _import_deepspeed() -> Any:
    """Import DeepSpeed for this machine: its CPU accelerator when there is no CUDA, quiet logs, no shm op build."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        import deepspeed
    except ImportError as e:
        raise ConfigError(f"--engine deepspeed needs DeepSpeed: pip install 'rlhfctl[train]' ({e})") from None
    from deepspeed.utils import logger as ds_logger

    if ds_logger.level <= logging.INFO:  # DeepSpeed prints its whole config and every step at INFO
        ds_logger.setLevel(logging.WARNING)
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cpu":
        # The CPU accelerator JIT-compiles a shared-memory all-reduce (~30 s cold) when it builds its comm backend;
        # only inference_all_reduce (tensor-parallel inference) uses it, never training, so skip the build.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    return deepspeed


def _cpu_adam_class() -> type:
    """DeepSpeed's CPU Adam, for ZeRO-Offload on GPU machines (JIT-compiled on first use: ~1 min, then cached)."""
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    return DeepSpeedCPUAdam


class DeepSpeedTrainingEngine(TrainingEngine):
    """DeepSpeed ZeRO stage 0-3 around the model, with a client AdamW (or DeepSpeedCPUAdam when offloading on GPU)."""

    def __init__(self, model: nn.Module, *, learning_rate: float, total_steps: int, warmup_ratio: float,
                 lr_scheduler: str,
                 max_norm: float, zero_stage: int, adam_offload: bool, bf16: bool, micro_train_batch_size: int,
                 train_batch_size: int, weight_decay: float, betas: tuple[float, float],
                 ds_config_overrides: dict[str, Any] | None, ring_attn_size: int = 1) -> None:
        deepspeed = _import_deepspeed()
        self._deepspeed = deepspeed
        self.rank, self.world_size = init_distributed(default_backend())
        self.kind, self.zero_stage, self.bf16 = "deepspeed", zero_stage, bf16
        self.gradient_accumulation_steps = accumulation_steps(micro_train_batch_size, train_batch_size,
                                                               self.world_size // ring_attn_size)
        offload = self._use_offload(adam_offload, zero_stage)
        # DeepSpeed counts a batch over every rank; the R ranks of a ring share theirs (models/ring_attention.py)
        config = self._config(zero_stage, offload, bf16, max_norm, micro_train_batch_size,
                              train_batch_size * ring_attn_size)
        _merge(config, ds_config_overrides or {})
        if bf16:
            to_bf16(model)
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        opt_cls = _cpu_adam_class() if offload else torch.optim.AdamW
        groups = param_groups(params, weight_decay)
        decays = [g["weight_decay"] for g in groups]
        # bf16 at ZeRO-0 wraps the optimizer in DeepSpeed's FP16_UnfusedOptimizer, which takes one AdamW step with
        # zero gradients at init to create the states. That step would count in Adam's bias correction (every later
        # update a different size) and apply weight decay once; so it runs without decay and its state is dropped.
        dummy_step = bf16 and zero_stage == 0
        if dummy_step:
            for g in groups:
                g["weight_decay"] = 0.0
        optimizer = opt_cls(groups, lr=learning_rate, betas=betas, eps=1e-8)
        self._ds, _, _, self._scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, config=config,
            lr_scheduler=lambda opt: make_scheduler(opt, total_steps, warmup_ratio, lr_scheduler),
        )
        if dummy_step:
            optimizer.state.clear()
            for g, decay in zip(optimizer.param_groups, decays):
                g["weight_decay"] = decay
        self.module, self.unwrapped = self._ds, model
        self.device = torch.device(self._ds.device)
        self._params = [p for _, p in params]

    @staticmethod
    def _use_offload(adam_offload: bool, zero_stage: int) -> bool:
        if not adam_offload:
            return False
        if not torch.cuda.is_available():
            warn_once("offload-cpu", (
                "--adam-offload has no effect without a GPU: parameters and Adam states already live in CPU "
                "memory. Using torch.optim.AdamW (DeepSpeedCPUAdam would first JIT-compile for about a minute)."))
            return False
        if zero_stage == 0:
            warn_once("offload-z0", "--adam-offload needs --zero-stage 1, 2 or 3; training without offload")
            return False
        return True

    def _config(self, zero_stage: int, offload: bool, bf16: bool, max_norm: float, micro: int,
                train_batch: int) -> dict[str, Any]:
        zero: dict[str, Any] = {"stage": zero_stage}
        if offload:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        return {
            "train_micro_batch_size_per_gpu": micro,
            "train_batch_size": train_batch,
            "gradient_clipping": max_norm,
            "zero_optimization": zero,
            # bf16 ZeRO optimizers skip a non-finite update only when asked to (fp32 ones always do).
            "bf16": {"enabled": bf16, "check_grad_overflow": True},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }

    def set_accumulation_boundary(self, boundary: bool | None) -> None:
        super().set_accumulation_boundary(boundary)
        if boundary is not None:  # DeepSpeed's override; set before the forward (ZeRO-3 acts on it there)
            self._ds.set_gradient_accumulation_boundary(boundary)

    def _backward(self, loss: torch.Tensor) -> None:
        self._ds.backward(loss)

    def _update(self) -> float | None | Literal[False]:
        boundary = self._ds.is_gradient_accumulation_boundary()
        grad_norm = None
        forced_skip = False
        if boundary and self.zero_stage == 0:  # ZeRO-0 clips inside step() but keeps no norm: measure it here
            grads = [p.grad.detach().float() for p in self._params if p.grad is not None]
            grad_norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
            # ZeRO 1-3 and bf16 skip a non-finite update themselves; ZeRO-0 in fp32 hands the client AdamW whatever
            # it gets. So DeepSpeed steps (its counters stay in line) over zeroed gradients while the AdamW holds no
            # parameters, and the optimizer is flagged `overflow`, which makes DeepSpeed skip the schedule step.
            forced_skip = not math.isfinite(grad_norm) and not hasattr(self._ds.optimizer, "overflow")
        saved_params = []
        if forced_skip:
            for p in self._params:
                if p.grad is not None:
                    p.grad.zero_()
            saved_params = [g["params"] for g in self._ds.optimizer.param_groups]
            for g in self._ds.optimizer.param_groups:
                g["params"] = []
            self._ds.optimizer.overflow = True
        try:
            self._ds.step()
        finally:
            if forced_skip:
                del self._ds.optimizer.overflow
                for g, params in zip(self._ds.optimizer.param_groups, saved_params):
                    g["params"] = params
        if not boundary:
            return False
        if not self._ds.was_step_applied():
            return grad_norm if grad_norm is not None and not math.isfinite(grad_norm) else math.nan
        if grad_norm is None:
            norm = self._ds.get_global_grad_norm()
            grad_norm = float(norm) if norm is not None else None
        return grad_norm

    def save_checkpoint(self, path: str) -> None:
        self._check_can_save()
        root, tag = Path(path), self._tag()
        self._ds.save_checkpoint(str(root), tag=tag, client_state={"rlhfctl": self._meta()})
        self._write_meta(root, tag)
        barrier()

    def load_checkpoint(self, path: str) -> None:
        root, tag, meta = self._resolve_checkpoint(path)
        loaded, _ = self._ds.load_checkpoint(str(root), tag=tag, load_optimizer_states=True,
                                             load_lr_scheduler_states=True)
        if loaded is None:
            raise EngineError(f"DeepSpeed could not load the checkpoint {root / tag}")
        self.global_step, self.micro_step, self._backward_pending = int(meta["global_step"]), 0, False

    def state_dict_for_save(self) -> dict[str, torch.Tensor]:
        if self.zero_stage < 3:
            return {} if self.rank else {k: v.detach().cpu().clone() for k, v in self.unwrapped.state_dict().items()}
        out: dict[str, torch.Tensor] = {}
        copies: dict[int, torch.Tensor] = {}  # tied weights: gather once, share the copy
        for key, value in self.unwrapped.state_dict(keep_vars=True).items():
            if id(value) not in copies:
                # One parameter at a time, so no rank ever holds more than one extra full tensor.
                gather = (self._deepspeed.zero.GatheredParameters([value], modifier_rank=None)
                          if hasattr(value, "ds_id") else contextlib.nullcontext())
                with gather:
                    copies[id(value)] = value.detach().cpu().clone() if self.rank == 0 else value
            if self.rank == 0:
                out[key] = copies[id(value)]
        return out

    def gathered(self, params: list[nn.Parameter]) -> contextlib.AbstractContextManager[Any]:
        if self.zero_stage < 3:
            return contextlib.nullcontext()
        return self._deepspeed.zero.GatheredParameters(params, modifier_rank=None)

    @contextlib.contextmanager
    def gathered_params(self) -> Iterator[None]:
        if self.zero_stage < 3:
            yield
            return
        with self._deepspeed.zero.GatheredParameters(list(self.unwrapped.parameters()), modifier_rank=None):
            yield


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    """Recursively merge `extra` into `base` (nested dicts merge, other values replace)."""
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
