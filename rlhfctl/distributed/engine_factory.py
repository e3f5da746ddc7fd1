"""`build_engine`: the one entry point that wraps a model in a training engine of the kind asked for.

It lives apart from engine.py so that the shared API there never imports its own subclasses (torch_engine.py and
deepspeed_engine.py import engine.py; this module imports all three).
"""

from __future__ import annotations

import os
from typing import Any

import torch.distributed as dist
from torch import nn

from rlhfctl.distributed.engine import (EngineKind, TrainingEngine, accumulation_steps, enable_gradient_checkpointing,
                                        lr_at)
from rlhfctl.distributed.process_group import default_backend, init_distributed
from rlhfctl.errors import ConfigError


def build_engine(model: nn.Module, *, kind: EngineKind, learning_rate: float, total_steps: int,
                 warmup_ratio: float = 0.03, lr_scheduler: str = "cosine_with_min_lr", max_norm: float = 1.0,
                 zero_stage: int = 2, adam_offload: bool = False,
                 bf16: bool = False, gradient_checkpointing: bool = False, micro_train_batch_size: int = 1,
                 train_batch_size: int = 1, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.95),
                 ds_config_overrides: dict[str, Any] | None = None, ring_attn_size: int = 1) -> TrainingEngine:
    """Wrap `model` (put in train mode) for training; see the module docstring for the call sequence.

    `kind="torch"` ignores zero_stage and adam_offload. `betas` default to OpenRLHF's (0.9, 0.95).
    `ds_config_overrides` is merged into the DeepSpeed config (e.g. {"zero_optimization":
    {"stage3_param_persistence_threshold": 0}}). Distributed set-up: see `init_distributed`. With
    `ring_attn_size` R, rings of R workers share each micro-batch (models/ring_attention.py): the data-parallel
    size that --train-batch-size is divided by is the world over R.
    """
    if kind not in ("deepspeed", "torch"):
        raise ConfigError(f"engine must be 'deepspeed' or 'torch', not {kind!r}")
    if not 0 <= zero_stage <= 3:
        raise ConfigError(f"--zero-stage must be 0, 1, 2 or 3, not {zero_stage}")
    if total_steps < 1:
        raise ConfigError(f"total_steps must be >= 1, not {total_steps}")
    if not 0 <= warmup_ratio < 1:
        raise ConfigError(f"--lr-warmup-ratio must be in [0, 1), not {warmup_ratio}")
    lr_at(0, total_steps=total_steps, warmup_ratio=warmup_ratio, scheduler=lr_scheduler)  # an unknown name exits 2
    if learning_rate <= 0 or max_norm <= 0:
        raise ConfigError("learning_rate and max_norm must be > 0")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"{type(model).__name__} has no trainable parameters")
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    if kind == "deepspeed":
        from rlhfctl.distributed.deepspeed_engine import DeepSpeedTrainingEngine

        return DeepSpeedTrainingEngine(
            model, learning_rate=learning_rate, total_steps=total_steps, warmup_ratio=warmup_ratio,
            lr_scheduler=lr_scheduler, max_norm=max_norm, zero_stage=zero_stage, adam_offload=adam_offload,
            bf16=bf16,
            micro_train_batch_size=micro_train_batch_size, train_batch_size=train_batch_size,
            weight_decay=weight_decay, betas=betas, ds_config_overrides=ds_config_overrides,
            ring_attn_size=ring_attn_size,
        )
    distributed = dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = init_distributed(default_backend()) if distributed else (0, 1)
    from rlhfctl.distributed.torch_engine import TorchTrainingEngine

    return TorchTrainingEngine(
        model, learning_rate=learning_rate, total_steps=total_steps, warmup_ratio=warmup_ratio,
        lr_scheduler=lr_scheduler, max_norm=max_norm, bf16=bf16,
        gradient_accumulation_steps=accumulation_steps(micro_train_batch_size, train_batch_size,
                                                       world // ring_attn_size),
        weight_decay=weight_decay, betas=betas, rank=rank, world_size=world,
    )
