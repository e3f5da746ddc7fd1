"""The training engine of train-ppo's actor and critic workers: DeepSpeed ZeRO 0-3 or plain torch, one API.

Both kinds share the optimizer (AdamW, no decay on biases and norms), the schedule (`lr_at`), clipping, gradient
accumulation and the checkpoint layout, so one worker gives the same updates with either kind (fp32: within 1e-5;
tests/test_engine.py checks it). Usage, the same for both kinds and for every micro-batch:

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
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
import torch.distributed as dist
from torch import nn

from rlhfctl.errors import ConfigError, RlhfctlError

log = logging.getLogger(__name__)

EngineKind = Literal["deepspeed", "torch"]
MIN_LR_RATIO = 0.1  # cosine decays to lr / 10, OpenRLHF's default (cosine_with_min_lr, min_lr = 0.1 x lr)
META_FILE = "rlhfctl_engine.json"  # next to each checkpoint: which engine wrote it, at which step
TORCH_STATE_FILE = "engine_state.pt"
_DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")
_warned: set[str] = set()


class EngineError(RlhfctlError):
    """A checkpoint that is missing or was written by an incompatible engine, or a broken distributed set-up."""


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


# ----------------------------------------------------------------------------------------------- distributed
def free_port() -> int:
    """A TCP port free right now on this host, for rank 0's torch.distributed rendezvous (MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def init_distributed(backend: str = "gloo", timeout_s: float = 1800.0) -> tuple[int, int]:
    """Initialise torch.distributed once from the environment; return (rank, world_size).

    Idempotent: an already initialised process group is kept. Reads MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE;
    when none is set this process becomes a world of one over an in-memory store (no port; DeepSpeed needs a
    process group even then). LOCAL_RANK defaults to 0, which DeepSpeed requires. On CPU the backend must be gloo
    (nccl needs CUDA). `timeout_s` bounds how long a collective waits for a missing peer, so a dead worker fails
    the job instead of hanging it.
    """
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if backend == "nccl" and not torch.cuda.is_available():
        raise ConfigError("torch.distributed backend 'nccl' needs CUDA GPUs; use 'gloo' on CPU")
    os.environ.setdefault("LOCAL_RANK", "0")
    timeout = timedelta(seconds=timeout_s)
    present = [k for k in _DIST_ENV if k in os.environ]
    if not present:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        return 0, 1
    if len(present) < len(_DIST_ENV):
        missing = [k for k in _DIST_ENV if k not in os.environ]
        raise EngineError(f"distributed set-up: {', '.join(present)} set but {', '.join(missing)} missing")
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except ValueError as e:
        raise EngineError(f"distributed set-up: RANK and WORLD_SIZE must be integers ({e})") from None
    if world < 1 or not 0 <= rank < world:
        raise EngineError(f"distributed set-up: need 0 <= RANK < WORLD_SIZE, got RANK={rank} WORLD_SIZE={world}")
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, timeout=timeout)
    return rank, world


def _default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def _local_device() -> torch.device:
    """This worker's device: GPU LOCAL_RANK when there are GPUs (as DeepSpeed picks it), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    index = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


# ----------------------------------------------------------------------------------------------- schedule
def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """Optimizer steps of linear warm-up: ceil(ratio x total), as OpenRLHF counts them."""
    return math.ceil(total_steps * warmup_ratio)


def lr_at(step: int, *, total_steps: int, warmup_ratio: float) -> float:
    """Learning-rate multiplier for optimizer step `step` (0-based): linear warm-up, then cosine down to 0.1.

    OpenRLHF's default schedule (cosine_with_min_lr, min_lr = lr / 10) with one change: warm-up runs 1/w, 2/w, ...,
    w/w of the learning rate instead of starting at 0, so the first update is not wasted. Past `total_steps` the
    multiplier stays at 0.1.
    """
    warm = warmup_steps(total_steps, warmup_ratio)
    if step < warm:
        return (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total_steps - warm))
    return MIN_LR_RATIO + (1.0 - MIN_LR_RATIO) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _make_scheduler(optimizer: Any, total_steps: int, warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    # A partial, not a callable object: LambdaLR then saves only its counters, and a resumed run keeps the schedule
    # its own arguments describe.
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(lr_at, total_steps=total_steps, warmup_ratio=warmup_ratio)
    )


def _param_groups(params: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only, never on biases and norm weights (1-d tensors)."""
    decay = [p for _, p in params if p.ndim >= 2]
    no_decay = [p for _, p in params if p.ndim < 2]
    return [g for g in ({"params": decay, "weight_decay": weight_decay},
                        {"params": no_decay, "weight_decay": 0.0}) if g["params"]]


# ----------------------------------------------------------------------------------------------- helpers
def _enable_gradient_checkpointing(model: nn.Module) -> None:
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


def _accumulation_steps(micro: int, train_batch: int, world: int) -> int:
    if micro < 1 or train_batch < 1:
        raise ConfigError("micro_train_batch_size and train_batch_size must be >= 1")
    if train_batch % (micro * world):
        raise ConfigError(
            f"--train-batch-size ({train_batch}) must be a multiple of --micro-train-batch-size ({micro}) x "
            f"data-parallel size ({world}) = {micro * world}"
        )
    return train_batch // (micro * world)


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


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
        ran, the one the next update will use)}.
        """
        if not self._backward_pending:
            raise RuntimeError("TrainingEngine.step() without backward(loss) since the last step()")
        self._backward_pending = False
        lr = self.lr
        grad_norm = self._update()
        if grad_norm is False:
            self.micro_step += 1
            return {"stepped": False, "grad_norm": None, "lr": lr}
        self.global_step += 1
        self.micro_step = 0
        return {"stepped": True, "grad_norm": grad_norm, "lr": lr}

    def _backward(self, loss: torch.Tensor) -> None:
        raise NotImplementedError

    def _update(self) -> float | None | Literal[False]:
        """End a micro-batch: False when it was not the last of an accumulation, else the update's grad norm."""
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

    # shared pieces
    @property
    def lr(self) -> float:
        """The learning rate of the next update."""
        return float(self._scheduler.get_last_lr()[0])

    def _check_can_save(self) -> None:
        if self.micro_step:
            _warn_once("save-mid-accumulation", (
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
            _warn_once("ckpt-bf16", f"checkpoint {root / tag} was saved with bf16={meta['bf16']}; resuming with "
                                    f"bf16={self.bf16}")
        return root, tag, meta


# ----------------------------------------------------------------------------------------------- torch
class TorchTrainingEngine(TrainingEngine):
    """Plain torch: AdamW on this process, gradients averaged across ranks (gloo/nccl all-reduce) at each update.

    Not DDP: DDP only reduces gradients when forward runs through its wrapper, and the HF model must stay bare for
    generate(). One all-reduce of all gradients per update gives DDP's result (the mean gradient) and lets
    accumulation skip communication. With bf16 the model computes in bfloat16 and AdamW updates fp32 master
    copies, as DeepSpeed's bf16 optimizers do.
    """

    def __init__(self, model: nn.Module, *, learning_rate: float, total_steps: int, warmup_ratio: float,
                 max_norm: float, bf16: bool, gradient_accumulation_steps: int, weight_decay: float,
                 betas: tuple[float, float], rank: int, world_size: int) -> None:
        self.kind, self.zero_stage, self.bf16 = "torch", 0, bf16
        self.module = self.unwrapped = model
        self.rank, self.world_size = rank, world_size
        self.device = _local_device()
        model.to(self.device)
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self._max_norm = max_norm
        if bf16:
            model.to(torch.bfloat16)
        if world_size > 1:  # start from rank 0's weights, as DDP and DeepSpeed do
            for t in model.state_dict().values():
                dist.broadcast(t, src=0)
        self._params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        # The optimizer owns fp32 tensors: the parameters themselves in fp32, fp32 master copies under bf16.
        self._master = ([nn.Parameter(p.detach().float().clone()) for _, p in self._params] if bf16
                        else [p for _, p in self._params])
        named_master = [(n, m) for (n, _), m in zip(self._params, self._master)]
        self._optimizer = torch.optim.AdamW(_param_groups(named_master, weight_decay), lr=learning_rate,
                                            betas=betas, eps=1e-8)
        self._scheduler = _make_scheduler(self._optimizer, total_steps, warmup_ratio)

    def _backward(self, loss: torch.Tensor) -> None:
        (loss / self.gradient_accumulation_steps).backward()

    def _update(self) -> float | Literal[False]:
        if self.micro_step + 1 < self.gradient_accumulation_steps:
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
        for m, g in zip(self._master, grads):
            m.grad = g
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self._master, self._max_norm))
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
        _barrier()

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
        self._scheduler.load_state_dict(state["scheduler"])
        self.global_step, self.micro_step, self._backward_pending = int(state["global_step"]), 0, False
        self._optimizer.zero_grad(set_to_none=True)
        self.unwrapped.zero_grad(set_to_none=True)

    def state_dict_for_save(self) -> dict[str, torch.Tensor]:
        if self.rank != 0:
            return {}
        return {k: v.detach().cpu().clone() for k, v in self.unwrapped.state_dict().items()}


# ----------------------------------------------------------------------------------------------- deepspeed
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
                 max_norm: float, zero_stage: int, adam_offload: bool, bf16: bool, micro_train_batch_size: int,
                 train_batch_size: int, weight_decay: float, betas: tuple[float, float],
                 ds_config_overrides: dict[str, Any] | None) -> None:
        deepspeed = _import_deepspeed()
        self._deepspeed = deepspeed
        self.rank, self.world_size = init_distributed(_default_backend())
        self.kind, self.zero_stage, self.bf16 = "deepspeed", zero_stage, bf16
        self.gradient_accumulation_steps = _accumulation_steps(micro_train_batch_size, train_batch_size,
                                                               self.world_size)
        offload = self._use_offload(adam_offload, zero_stage)
        config = self._config(zero_stage, offload, bf16, max_norm, micro_train_batch_size, train_batch_size)
        _merge(config, ds_config_overrides or {})
        if bf16:
            model.to(torch.bfloat16)
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        opt_cls = _cpu_adam_class() if offload else torch.optim.AdamW
        groups = _param_groups(params, weight_decay)
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
            lr_scheduler=lambda opt: _make_scheduler(opt, total_steps, warmup_ratio),
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
            _warn_once("offload-cpu", (
                "--adam-offload has no effect without a GPU: parameters and Adam states already live in CPU "
                "memory. Using torch.optim.AdamW (DeepSpeedCPUAdam would first JIT-compile for about a minute)."))
            return False
        if zero_stage == 0:
            _warn_once("offload-z0", "--adam-offload needs --zero-stage 1, 2 or 3; training without offload")
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
            "bf16": {"enabled": bf16},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }

    def _backward(self, loss: torch.Tensor) -> None:
        self._ds.backward(loss)

    def _update(self) -> float | None | Literal[False]:
        boundary = self._ds.is_gradient_accumulation_boundary()
        grad_norm = None
        if boundary and self.zero_stage == 0:  # ZeRO-0 clips inside step() but keeps no norm: measure it here
            grads = [p.grad.detach().float() for p in self._params if p.grad is not None]
            grad_norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
        self._ds.step()
        if not boundary:
            return False
        if grad_norm is None:
            norm = self._ds.get_global_grad_norm()
            grad_norm = float(norm) if norm is not None else None
        return grad_norm

    def save_checkpoint(self, path: str) -> None:
        self._check_can_save()
        root, tag = Path(path), self._tag()
        self._ds.save_checkpoint(str(root), tag=tag, client_state={"rlhfctl": self._meta()})
        self._write_meta(root, tag)
        _barrier()

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


# ----------------------------------------------------------------------------------------------- factory
def build_engine(model: nn.Module, *, kind: EngineKind, learning_rate: float, total_steps: int,
                 warmup_ratio: float = 0.03, max_norm: float = 1.0, zero_stage: int = 2, adam_offload: bool = False,
                 bf16: bool = False, gradient_checkpointing: bool = False, micro_train_batch_size: int = 1,
                 train_batch_size: int = 1, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.95),
                 ds_config_overrides: dict[str, Any] | None = None) -> TrainingEngine:
    """Wrap `model` (put in train mode) for training; see the module docstring for the call sequence.

    `kind="torch"` ignores zero_stage and adam_offload. `betas` default to OpenRLHF's (0.9, 0.95).
    `ds_config_overrides` is merged into the DeepSpeed config (e.g. {"zero_optimization":
    {"stage3_param_persistence_threshold": 0}}). Distributed set-up: see `init_distributed`.
    """
    if kind not in ("deepspeed", "torch"):
        raise ConfigError(f"engine must be 'deepspeed' or 'torch', not {kind!r}")
    if not 0 <= zero_stage <= 3:
        raise ConfigError(f"--zero-stage must be 0, 1, 2 or 3, not {zero_stage}")
    if total_steps < 1:
        raise ConfigError(f"total_steps must be >= 1, not {total_steps}")
    if not 0 <= warmup_ratio < 1:
        raise ConfigError(f"--lr-warmup-ratio must be in [0, 1), not {warmup_ratio}")
    if learning_rate <= 0 or max_norm <= 0:
        raise ConfigError("learning_rate and max_norm must be > 0")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"{type(model).__name__} has no trainable parameters")
    if gradient_checkpointing:
        _enable_gradient_checkpointing(model)
    model.train()
    if kind == "deepspeed":
        return DeepSpeedTrainingEngine(
            model, learning_rate=learning_rate, total_steps=total_steps, warmup_ratio=warmup_ratio,
            max_norm=max_norm, zero_stage=zero_stage, adam_offload=adam_offload, bf16=bf16,
            micro_train_batch_size=micro_train_batch_size, train_batch_size=train_batch_size,
            weight_decay=weight_decay, betas=betas, ds_config_overrides=ds_config_overrides,
        )
    distributed = dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = init_distributed(_default_backend()) if distributed else (0, 1)
    return TorchTrainingEngine(
        model, learning_rate=learning_rate, total_steps=total_steps, warmup_ratio=warmup_ratio, max_norm=max_norm,
        bf16=bf16, gradient_accumulation_steps=_accumulation_steps(micro_train_batch_size, train_batch_size, world),
        weight_decay=weight_decay, betas=betas, rank=rank, world_size=world,
    )
