"""`llm_engine` for agent code when the policy generates with Hugging Face `generate` (no vLLM engines).

Episodes run as asyncio tasks; each `await llm_engine.generate(ids, sampling_params)` queues a request, and the
requests queued while the previous batch ran go to the model together, in one left-padded `model.generate` call
per sampling setting (temperature, top-p, top-k). The model runs in a thread, so environments keep stepping while
it generates. Outputs are shaped as vLLM's RequestOutput (agents/sampling.py).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Optional

import torch

from rlhfctl.agents.sampling import CompletionOutput, Logprob, RequestOutput, read_params

_request_ids = itertools.count()
_request_keys = itertools.count()


class BatchingEngine:
    """Queues the generation requests of concurrent episodes and sends those queued meanwhile as one batch to
    `_run_batch` (a subclass: HF generate here, vLLM engine actors in vllm_engine.py). Each request has a key; an
    episode that stops waiting while its request is in a batch under way (its --agent-timeout, a failure) hands that
    key to `_abort`, so an engine that can stops generating it."""

    def __init__(self, max_batch: Optional[int] = None) -> None:
        self.max_batch = max_batch  # most requests per batch (memory); None: all that are queued
        self._pending: list[tuple[int, list[int], dict[str, Any], asyncio.Future]] = []
        self._in_flight: set[int] = set()  # keys of the requests in the batch under way
        self._task: Optional[asyncio.Task] = None
        self.batches = 0  # batches sent, for the tests and metrics
        self.requests = 0

    async def generate(self, prompt_token_ids: list[int], sampling_params: Any,
                       multi_modal_data: Any = None, **_: Any) -> RequestOutput:
        if multi_modal_data:
            raise ValueError("multi_modal_data: vision-language prompts are not supported")
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        key = next(_request_keys)
        self._pending.append((key, [int(t) for t in prompt_token_ids], read_params(sampling_params), future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._serve())
        try:
            return await future
        except asyncio.CancelledError:
            if key in self._in_flight:
                self._abort(key)
            raise

    async def _run_batch(self, requests: list[tuple[int, list[int], dict[str, Any]]]) -> list[list[CompletionOutput]]:
        """Per (key, prompt token ids, sampling parameters): its completions."""
        raise NotImplementedError

    def _abort(self, key: int) -> None:
        """Stop generating request `key` of the batch under way, if the engine can (HF generate cannot drop one row
        of a batch: its episode's result is discarded instead)."""

    async def _serve(self) -> None:
        while self._pending:
            for _ in range(4):  # let every episode that is ready to generate queue its request first
                await asyncio.sleep(0)
            cut = self.max_batch or len(self._pending)
            batch, self._pending = self._pending[:cut], self._pending[cut:]
            batch = [item for item in batch if not item[3].done()]  # an episode that timed out is not generated for
            if not batch:
                continue
            keys = {key for key, _, _, _ in batch}
            self._in_flight |= keys
            try:
                outputs = await self._run_batch([(key, ids, params) for key, ids, params, _ in batch])
            except Exception as exc:  # the model failed: every waiting episode hears it
                for _, _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            finally:
                self._in_flight -= keys
            self.batches += 1
            self.requests += len(batch)
            for (_, ids, _, future), outs in zip(batch, outputs):
                if not future.done():
                    future.set_result(RequestOutput(str(next(_request_ids)), ids, outs))


class HFEngine(BatchingEngine):
    """Batched `model.generate` in a thread, so environments keep stepping while the model runs."""

    def __init__(self, model: Any, tokenizer: Any, max_batch: Optional[int] = None) -> None:
        super().__init__(max_batch)
        self.model = model
        self.tokenizer = tokenizer

    async def _run_batch(self, requests: list[tuple[int, list[int], dict[str, Any]]]) -> list[list[CompletionOutput]]:
        return await asyncio.to_thread(generate_batch, self.model, self.tokenizer,
                                       [(ids, params) for _, ids, params in requests])


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    eos = model.generation_config.eos_token_id
    eos = tokenizer.eos_token_id if eos is None else eos
    return [] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]


@torch.no_grad()
def generate_batch(model: Any, tokenizer: Any, requests: list[tuple[list[int], dict[str, Any]]]
                   ) -> list[list[CompletionOutput]]:
    """n completions per request; requests that share sampling settings share one `model.generate` call, with
    max_new_tokens their largest max_tokens (each output is then cut to its own)."""
    results: list[list[CompletionOutput]] = [[] for _ in requests]
    groups: dict[tuple, list[int]] = {}
    for i, (_, p) in enumerate(requests):
        groups.setdefault((p["temperature"], p["top_p"], p["top_k"]), []).append(i)
    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    device = next(model.parameters()).device
    for (temperature, top_p, top_k), members in groups.items():
        rows = [(i, k) for i in members for k in range(requests[i][1]["n"])]
        width = max(len(requests[i][0]) for i, _ in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (i, _) in enumerate(rows):
            prompt = requests[i][0]
            ids[r, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[r, width - len(prompt):] = 1
        limits = [requests[i][1]["max_tokens"] for i, _ in rows]
        max_new = max(int(m) if m else 1 for m in limits)
        want_logprobs = any(requests[i][1]["logprobs"] is not None for i, _ in rows)
        sampling = ({"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k}
                    if temperature > 0 else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new,
                             use_cache=True, pad_token_id=pad, eos_token_id=eos or None, output_scores=want_logprobs,
                             return_dict_in_generate=True, **sampling)
        new = out.sequences[:, width:].cpu()
        for r, (i, k) in enumerate(rows):
            params = requests[i][1]
            tokens = new[r].tolist()[:int(params["max_tokens"]) if params["max_tokens"] else max_new]
            stop = next((j for j, t in enumerate(tokens) if t in eos), None)
            if stop is not None:
                tokens = tokens[:stop + 1]
            logprobs = None
            if params["logprobs"] is not None:
                logprobs = [{t: Logprob(float(torch.log_softmax(out.scores[j][r].float(), -1)[t]))}
                            for j, t in enumerate(tokens)]
            results[i].append(CompletionOutput(
                index=k, text=tokenizer.decode(tokens, skip_special_tokens=params["skip_special_tokens"]),
                token_ids=tokens, logprobs=logprobs, finish_reason="stop" if stop is not None else "length"))
    return results
