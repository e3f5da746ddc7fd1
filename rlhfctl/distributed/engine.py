"""The training engine of train-ppo's actor and critic workers: DeepSpeed ZeRO 0-3 or plain torch, one API.

Both kinds share the optimizer (AdamW, no decay on biases and norms), the schedule (`lr_at`, --lr-scheduler),
clipping, gradient accumulation and the checkpoint layout, so one worker gives the same updates with either kind
(fp32: within 1e-5; tests/unit/test_engine.py checks it). Usage, the same for both kinds and for every micro-batch:

    engine = build_engine(model, kind="deepspeed", learning_rate=1e-6, total_steps=100, train_batch_size=8)
    out = engine.module(input_ids=ids.to(engine.device))  # forward through the engine, not the bare model
    engine.backward(loss)                                  # scales by 1 / accumulation steps
    stats = engine.step()   # an update every `gradient_accumulation_steps` calls; stats["stepped"] says so
    with engine.gathered_params():                         # ZeRO-3: whole weights for generate()
        engine.module.generate(...)

`gradient_accumulation_steps = train_batch_size / (micro_train_batch_size * world_size)`, as DeepSpeed counts it;
`total_steps` counts optimizer updates, not micro-batches.

On a machine without a GPU DeepSpeed runs on its CPU accelerator over gloo with a client `torch.optim.AdamW`
(no JIT build of fused Adam). Distributed set-up comes from MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK,
which the Ray roles set before building an engine.

This module holds what the kinds share (the API, schedule, checkpoint checks); `build_engine` (engine_factory.py)
picks a kind, whose classes are in torch_engine.py and deepspeed_engine.py, the process group in process_group.py.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
from torch import nn

from rlhfctl.distributed.process_group import EngineError, init_distributed
from rlhfctl.errors import ConfigError

__all__ = ["EngineError", "EngineKind", "TrainingEngine", "init_distributed", "lr_at"]

log = logging.getLogger(__name__)

EngineKind = Literal["deepspeed", "torch"]
MIN_LR_RATIO = 0.1  # cosine decays to lr / 10, OpenRLHF's default (cosine_with_min_lr, min_lr = 0.1 x lr)
META_FILE = "rlhfctl_engine.json"  # next to each checkpoint: which engine wrote it, at which step
TORCH_STATE_FILE = "engine_state.pt"
_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


# ----------------------------------------------------------------------------------------------- schedule
def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """Optimizer steps of linear warm-up: ceil(ratio x total), as OpenRLHF counts them."""
    return math.ceil(total_steps * warmup_ratio)


LR_SCHEDULERS = ("cosine_with_min_lr", "cosine", "linear", "constant", "constant_with_warmup")


def lr_at(step: int, *, total_steps: int, warmup_ratio: float, scheduler: str = "cosine_with_min_lr") -> float:
    """Learning-rate multiplier for optimizer step `step` (0-based): linear warm-up, then the named schedule.

    The shapes of transformers' schedulers that OpenRLHF's --lr_scheduler picks from: cosine_with_min_lr
    (OpenRLHF's default: cosine down to min_lr = lr / 10, then 0.1), cosine (down to 0), linear (down to 0),
    constant_with_warmup (1 after the warm-up) and constant (1 from the first step; no warm-up, as in
    transformers). One change: warm-up runs 1/w, 2/w, ..., w/w of the learning rate instead of starting at 0, so
    the first update is not wasted. Past `total_steps` the multiplier stays at its end value.
    """
    if scheduler not in LR_SCHEDULERS:
        raise ConfigError(f"--lr-scheduler must be one of {', '.join(LR_SCHEDULERS)}, not {scheduler!r}")
    if scheduler == "constant":
        return 1.0
    warm = warmup_steps(total_steps, warmup_ratio)
    if step < warm:
        return (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total_steps - warm))
    if scheduler == "constant_with_warmup":
        return 1.0
    if scheduler == "linear":
        return 1.0 - progress
    floor = MIN_LR_RATIO if scheduler == "cosine_with_min_lr" else 0.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: Any, total_steps: int, warmup_ratio: float,
                   scheduler: str = "cosine_with_min_lr") -> torch.optim.lr_scheduler.LambdaLR:
    # A partial, not a callable object: LambdaLR then saves only its counters, and a resumed run keeps the schedule
    # its own arguments describe.
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(lr_at, total_steps=total_steps, warmup_ratio=warmup_ratio, scheduler=scheduler)
    )


def param_groups(params: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only, never on biases and norm weights (1-d tensors)."""
    decay = [p for _, p in params if p.ndim >= 2]
    no_decay = [p for _, p in params if p.ndim < 2]
    return [g for g in ({"params": decay, "weight_decay": weight_decay},
                        {"params": no_decay, "weight_decay": 0.0}) if g["params"]]


# ----------------------------------------------------------------------------------------------- helpers
def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Turn on non-reentrant activation checkpointing on the model, or on the outermost HF models inside it.

    Non-reentrant: the reentrant variant loses gradients of inputs that do not require grad and breaks under ZeRO-3.
    """
    done: list[str] = []
    for name, sub in model.named_modules():  # the model itself comes first, as name ""
        if any(name.startswith(d + ".") or d == "" for d in done):
            continue
        if hasattr(sub, "activation_checkpointing_enable"):  # transformers >= 5
            sub.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif hasattr(sub, "gradient_checkpointing_enable"):
            sub.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            continue
        done.append(name)
    if not done:
        raise ConfigError(f"--gradient-checkpointing: {type(model).__name__} has no Hugging Face model inside")


def to_bf16(model: nn.Module) -> None:
    """Cast to bfloat16, except a 4-bit (QLoRA) base, which bitsandbytes keeps packed (its compute dtype is set at
    load time)."""
    if not getattr(model, "is_loaded_in_4bit", False):
        model.to(torch.bfloat16)


def accumulation_steps(micro: int, train_batch: int, world: int) -> int:
    if micro < 1 or train_batch < 1:
        raise ConfigError("micro_train_batch_size and train_batch_size must be >= 1")
    if train_batch % (micro * world):
        raise ConfigError(
            f"--train-batch-size ({train_batch}) must be a multiple of --micro-train-batch-size ({micro}) x "
            f"data-parallel size ({world}) = {micro * world}"
        )
    return train_batch // (micro * world)


# ----------------------------------------------------------------------------------------------- the engine
class TrainingEngine:
    """One data-parallel worker's model, optimizer and schedule. Build it with `build_engine`.

    `module` is what to call forward on for training: the HF model itself for kind "torch"; for "deepspeed" the
    DeepSpeed engine wrapping it, because DeepSpeed 0.19 hooks its backward bookkeeping onto the outputs of its own
    forward (a forward on the bare model gives wrong updates under ZeRO-3 with gradient accumulation). The
    DeepSpeed engine passes attribute lookups through, so `module.generate` and `module.config` work with both.
    `unwrapped` is always the model that was passed in: use it for parameter names and save_pretrained.
    """

    kind: EngineKind
    module: nn.Module
    unwrapped: nn.Module
    world_size: int
    rank: int
    zero_stage: int
    bf16: bool
    gradient_accumulation_steps: int
    device: torch.device  # where to put input tensors
    global_step: int = 0  # optimizer updates done
    micro_step: int = 0  # micro-batches (step() calls) since the last update
    _backward_pending: bool = False

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate gradients of `loss / gradient_accumulation_steps`; once per micro-batch, then step()."""
        self._backward(loss)
        self._backward_pending = True

    def step(self) -> dict[str, Any]:
        """End of a micro-batch; at an accumulation boundary: clip to max_norm, AdamW step, schedule step, zero grads.

        Call it once after every micro-batch's backward(). Returns {"stepped": bool, "grad_norm": float | None
        (pre-clip global norm; None when no update ran), "lr": the learning rate the update used (or, when none
        ran, the one the next update will use)}. A non-finite global gradient norm (NaN or inf on any rank) is
        never applied: the gradients are dropped, the optimizer, schedule and step count stay as they were, and
        the result has "nonfinite": True (every rank sees the same norm, so all ranks skip together).
        """
        if not self._backward_pending:
            raise RuntimeError("TrainingEngine.step() without backward(loss) since the last step()")
        self._backward_pending = False
        lr = self.lr
        grad_norm = self._update()
        if grad_norm is False:
            self.micro_step += 1
            return {"stepped": False, "grad_norm": None, "lr": lr}
        if grad_norm is not None and not math.isfinite(grad_norm):
            self.micro_step = 0
            return {"stepped": False, "nonfinite": True, "grad_norm": grad_norm, "lr": lr}
        self.global_step += 1
        self.micro_step = 0
        return {"stepped": True, "grad_norm": grad_norm, "lr": lr}

    def set_accumulation_boundary(self, boundary: bool | None) -> None:
        """Whether the next micro-batch ends an accumulation: token-budget micro-batches (--use-dynamic-batch) vary
        in number per update. None (the default): every `gradient_accumulation_steps` micro-batches."""
        self._boundary = boundary

    def _at_boundary(self) -> bool:
        boundary = getattr(self, "_boundary", None)
        return self.micro_step + 1 >= self.gradient_accumulation_steps if boundary is None else boundary

    def _backward(self, loss: torch.Tensor) -> None:
        raise NotImplementedError

    def _update(self) -> float | None | Literal[False]:
        """End a micro-batch: False when it was not the last of an accumulation, else the update's grad norm
        (a non-finite norm: the update was skipped, see step())."""
        raise NotImplementedError

    def save_checkpoint(self, path: str) -> None:
        """Save model, optimizer and schedule under `path/global_step{N}/`, and N's tag in `path/latest`.

        Every rank must call it. Call it after an update: gradients accumulated since are not saved.
        """
        raise NotImplementedError

    def load_checkpoint(self, path: str) -> None:
        """Resume from `path` (the folder holding `latest`, or one `global_step{N}` folder); every rank calls it."""
        raise NotImplementedError

    def state_dict_for_save(self) -> dict[str, torch.Tensor]:
        """The full model state dict (CPU tensors, keys of `unwrapped`) on rank 0, {} on the others.

        A collective under ZeRO-3 (parameters are gathered one at a time), so every rank must call it. Pass it to
        `unwrapped.save_pretrained(folder, state_dict=...)` on rank 0.
        """
        raise NotImplementedError

    @contextlib.contextmanager
    def gathered_params(self) -> Iterator[None]:
        """Inside, every parameter is whole on every rank (read-only); a no-op below ZeRO-3.

        Generate under ZeRO-3 inside it: besides being faster, a forward then runs no collective, so ranks may
        generate different numbers of tokens (outside, they would need generate(synced_gpus=True)).
        """
        yield

    def gathered(self, params: list[nn.Parameter]) -> contextlib.AbstractContextManager[Any]:
        """Inside, these parameters are whole on every rank (read-only); a no-op below ZeRO-3. Every rank enters."""
        return contextlib.nullcontext()

    # shared pieces
    @property
    def lr(self) -> float:
        """The learning rate of the next update."""
        return float(self._scheduler.get_last_lr()[0])

    def _check_can_save(self) -> None:
        if self.micro_step:
            warn_once("save-mid-accumulation", (
                f"checkpoint saved {self.micro_step} micro-batch(es) into an accumulation of "
                f"{self.gradient_accumulation_steps}: those gradients are not saved"))

    def _meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "zero_stage": self.zero_stage, "world_size": self.world_size,
                "bf16": self.bf16, "global_step": self.global_step}

    def _tag(self) -> str:
        return f"global_step{self.global_step}"

    def _write_meta(self, root: Path, tag: str) -> None:
        if self.rank == 0:
            (root / tag / META_FILE).write_text(json.dumps(self._meta(), indent=1) + "\n")

    def _resolve_checkpoint(self, path: str) -> tuple[Path, str, dict[str, Any]]:
        """(root folder, tag, saved meta) of a checkpoint, checked against this engine."""
        p = Path(path)
        if (p / META_FILE).is_file():
            root, tag = p.parent, p.name
        elif (p / "latest").is_file():
            root, tag = p, (p / "latest").read_text().strip()
        else:
            raise EngineError(f"no checkpoint at {path} (neither a 'latest' file nor {META_FILE})")
        meta_path = root / tag / META_FILE
        if not meta_path.is_file():
            raise EngineError(f"checkpoint {root / tag} has no {META_FILE}: not written by rlhfctl's engine")
        meta = json.loads(meta_path.read_text())
        if meta["kind"] != self.kind:
            raise EngineError(f"checkpoint {root / tag} was written by the {meta['kind']} engine; this run uses "
                              f"{self.kind} (pass --engine {meta['kind']})")
        if self.kind == "deepspeed" and meta["zero_stage"] != self.zero_stage:
            raise EngineError(f"checkpoint {root / tag} is ZeRO-{meta['zero_stage']}; this run uses "
                              f"ZeRO-{self.zero_stage} (pass --zero-stage {meta['zero_stage']})")
        if self.kind == "deepspeed" and self.zero_stage > 0 and meta["world_size"] != self.world_size:
            raise EngineError(f"checkpoint {root / tag} holds ZeRO shards of {meta['world_size']} workers; this run "
                              f"has {self.world_size}: resume with the same number of workers")
        if meta["bf16"] != self.bf16:
            warn_once("ckpt-bf16", f"checkpoint {root / tag} was saved with bf16={meta['bf16']}; resuming with "
                                    f"bf16={self.bf16}")
        return root, tag, meta


# ----------------------------------------------------------------------------------------------- factory
