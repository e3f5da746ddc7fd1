"""The plain-torch training engine (`--engine torch`): AdamW in each process, one gradient all-reduce per update."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

from rlhfctl.distributed.engine import TORCH_STATE_FILE, TrainingEngine, make_scheduler, param_groups, to_bf16
from rlhfctl.distributed.process_group import barrier, local_device


class TorchTrainingEngine(TrainingEngine):
    """Plain torch: AdamW on this process, gradients averaged across ranks (gloo/nccl all-reduce) at each update.

    Not DDP: DDP only reduces gradients when forward runs through its wrapper, and the HF model must stay bare for
    generate(). One all-reduce of all gradients per update gives DDP's result (the mean gradient) and lets
    accumulation skip communication. With bf16 the model computes in bfloat16 and AdamW updates fp32 master
    copies, as DeepSpeed's bf16 optimizers do.
    """

    def __init__(self, model: nn.Module, *, learning_rate: float, total_steps: int, warmup_ratio: float,
                 lr_scheduler: str,
                 max_norm: float, bf16: bool, gradient_accumulation_steps: int, weight_decay: float,
                 betas: tuple[float, float], rank: int, world_size: int) -> None:
        self.kind, self.zero_stage, self.bf16 = "torch", 0, bf16
        self.module = self.unwrapped = model
        self.rank, self.world_size = rank, world_size
        self.device = local_device()
        model.to(self.device)
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self._max_norm = max_norm
        if bf16:
            to_bf16(model)
        if world_size > 1:  # start from rank 0's weights, as DDP and DeepSpeed do
            for t in model.state_dict().values():
                dist.broadcast(t, src=0)
        self._params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        # The optimizer owns fp32 tensors: the parameters themselves in fp32, fp32 master copies under bf16.
        self._master = ([nn.Parameter(p.detach().float().clone()) for _, p in self._params] if bf16
                        else [p for _, p in self._params])
        named_master = [(n, m) for (n, _), m in zip(self._params, self._master)]
        # fused: one kernel over all tensors (CPU and CUDA); the per-tensor loop costs 5x as much on small models
        self._optimizer = torch.optim.AdamW(param_groups(named_master, weight_decay), lr=learning_rate,
                                            betas=betas, eps=1e-8, fused=True)
        self._scheduler = make_scheduler(self._optimizer, total_steps, warmup_ratio, lr_scheduler)

    def _backward(self, loss: torch.Tensor) -> None:
        (loss / self.gradient_accumulation_steps).backward()

    def _update(self) -> float | Literal[False]:
        if not self._at_boundary():
            return False
        grads = self._fp32_grads()
        if self.world_size > 1:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= self.world_size
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()
        grad_norm = float(torch.nn.utils.get_total_norm(grads))
        if not math.isfinite(grad_norm):  # never applied: drop the gradients, keep optimizer and schedule
            self.unwrapped.zero_grad(set_to_none=True)
            return grad_norm
        for m, g in zip(self._master, grads):
            m.grad = g
        torch.nn.utils.clip_grads_with_norm_(self._master, self._max_norm, torch.tensor(grad_norm))
        self._optimizer.step()
        self._scheduler.step()
        self._optimizer.zero_grad(set_to_none=True)
        self.unwrapped.zero_grad(set_to_none=True)
        if self.bf16:
            with torch.no_grad():
                for (_, p), m in zip(self._params, self._master):
                    p.copy_(m)
        return grad_norm

    def _fp32_grads(self) -> list[torch.Tensor]:
        """Each trainable parameter's gradient as a fresh fp32 tensor (zeros where backward did not reach it)."""
        return [p.grad.detach().float().clone() if p.grad is not None else torch.zeros_like(p, dtype=torch.float32)
                for _, p in self._params]

    def save_checkpoint(self, path: str) -> None:
        self._check_can_save()
        root, tag = Path(path), self._tag()
        if self.rank == 0:
            (root / tag).mkdir(parents=True, exist_ok=True)
            state = {
                "model": self.unwrapped.state_dict(),
                "master": [m.detach() for m in self._master] if self.bf16 else None,
                "optimizer": self._optimizer.state_dict(),
                "scheduler": self._scheduler.state_dict(),
                "global_step": self.global_step,
            }
            torch.save(state, root / tag / TORCH_STATE_FILE)
            self._write_meta(root, tag)
            (root / "latest").write_text(tag)
        barrier()

    def load_checkpoint(self, path: str) -> None:
        root, tag, _ = self._resolve_checkpoint(path)
        state = torch.load(root / tag / TORCH_STATE_FILE, map_location="cpu", weights_only=True)
        self.unwrapped.load_state_dict(state["model"])
        if self.bf16:
            masters = state["master"] or [p.detach() for _, p in self._params]
            with torch.no_grad():
                for m, saved in zip(self._master, masters):
                    m.copy_(saved)
        self._optimizer.load_state_dict(state["optimizer"])
        for group in self._optimizer.param_groups:  # a checkpoint saved before AdamW ran fused carries fused=None
            group["fused"] = True
        self._scheduler.load_state_dict(state["scheduler"])
        self.global_step, self.micro_step, self._backward_pending = int(state["global_step"]), 0, False
        self._optimizer.zero_grad(set_to_none=True)
        self.unwrapped.zero_grad(set_to_none=True)

    def state_dict_for_save(self) -> dict[str, torch.Tensor]:
        if self.rank != 0:
            return {}
        return {k: v.detach().cpu().clone() for k, v in self.unwrapped.state_dict().items()}
