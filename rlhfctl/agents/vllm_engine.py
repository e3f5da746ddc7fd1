"""Agent episodes on vLLM engines (--vllm-num-engines N with --agent-func-path).

The episodes run in the driver; their `llm_engine` batches the requests of concurrent turns and spreads each
batch over the engine actors' `generate_requests` (rlhfctl/rollout/engine.py: one request per prompt with its own
max_tokens, temperature, top-p; token ids, text, sampled log-probs and finish reason back). The user's code gets a
real `vllm.SamplingParams`. Hook: the vLLM rollout is given `functools.partial(agent_generate, sampling)` and its
generate calls it as `episodes(engines.workers, batch, n, evaluation)`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional, TYPE_CHECKING

from rlhfctl.agents.hf_engine import BatchingEngine
from rlhfctl.agents.sampling import CompletionOutput, Logprob
from rlhfctl.shards import contiguous_shards

if TYPE_CHECKING:
    from rlhfctl.config import RolloutArgs
    from rlhfctl.config.slices import SamplingGroups
    from rlhfctl.data import PromptExample
    from rlhfctl.rollout.samples import Samples


class VLLMRequestEngine(BatchingEngine):
    """`llm_engine` over vLLM engine actors (Ray handles of WorkerActors hosting VLLMEngine)."""

    def __init__(self, engines: list[Any]) -> None:
        super().__init__()
        self.engines = engines
        self._names: dict[int, list[str]] = {}  # a request key -> the engines' request ids of its n completions

    async def _run_batch(self, requests: list[tuple[int, list[int], dict[str, Any]]]) -> list[list[CompletionOutput]]:
        rows = []  # (request index, output index, the engine's request dict)
        for i, (key, ids, p) in enumerate(requests):
            if p["top_k"]:
                raise ValueError(f"sampling_params.top_k={p['top_k']}: the vLLM engines' request API takes "
                                 "max_tokens, temperature and top_p only")
            self._names[key] = [f"agent-{key}-{k}" for k in range(p["n"])]
            for k in range(p["n"]):
                rows.append((i, k, {"prompt_token_ids": ids, "max_tokens": p["max_tokens"] or 1,
                                    "temperature": p["temperature"], "top_p": p["top_p"],
                                    "logprobs": p["logprobs"] is not None, "request_id": self._names[key][k]}))
        shards = [s for s in contiguous_shards(len(rows), len(self.engines)) if s.stop > s.start]
        import ray

        from rlhfctl.distributed.roles import call, unwrap_remote_error
        from rlhfctl.rollout.engine import VLLMEngine

        try:
            answers = await asyncio.gather(*[call(engine, VLLMEngine.generate_requests, [r[2] for r in rows[s]])
                                             for engine, s in zip(self.engines, shards)])
        except ray.exceptions.RayError as exc:  # an engine's error as the user would read it in-process
            raise unwrap_remote_error(exc) from None
        finally:
            for key, _, _ in requests:
                self._names.pop(key, None)
        results: list[list[CompletionOutput]] = [[] for _ in requests]
        for (i, k, _), out in zip(rows, [a for part in answers for a in part]):
            logprobs = None
            if out.get("logprobs") is not None:
                logprobs = [{t: Logprob(lp)} for t, lp in zip(out["token_ids"], out["logprobs"])]
            results[i].append(CompletionOutput(index=k, text=out["text"], token_ids=list(out["token_ids"]),
                                               logprobs=logprobs, finish_reason=out["finish_reason"]))
        return results

    def _abort(self, key: int) -> None:
        """Every engine is told (a request's rows may be on any of them; an engine ignores names it does not hold);
        nothing waits for the answer."""
        from rlhfctl.distributed.roles import call
        from rlhfctl.rollout.engine import VLLMEngine

        names = self._names.get(key)
        if names:
            for engine in self.engines:
                call(engine, VLLMEngine.abort_request_ids, names)


def vllm_sampling_params(rollout: RolloutArgs, temperature: float, logprobs: Optional[int]) -> Any:
    from vllm import SamplingParams

    return SamplingParams(temperature=temperature, top_p=rollout.top_p, max_tokens=rollout.generate_max_len,
                          skip_special_tokens=False, logprobs=logprobs)


def agent_generate(sampling: SamplingGroups, engines: list[Any], batch: list[PromptExample], n: int,
                   evaluation: bool) -> Samples:
    """n episodes per prompt (prompt-major) on the engines; training episodes carry the engines' log-probs of the
    policy's tokens (rollout_log_probs), as the engines' single-turn samples do."""
    from rlhfctl.agents.episodes import play_episodes
    from rlhfctl.agents.rollout import cached_agent, cached_tokenizer, to_samples

    agent_args, rollout = sampling.agent, sampling.rollout
    assert agent_args.agent_func_path is not None
    agent = cached_agent(agent_args.agent_func_path, agent_args.max_turns)
    tokenizer = cached_tokenizer(sampling.model, sampling.load)
    prompts = [p.prompt for p in batch for _ in range(n)]
    labels = [p.label for p in batch for _ in range(n)]
    params = vllm_sampling_params(rollout, sampling.temperature(evaluation), None if evaluation else 0)
    episodes = asyncio.run(play_episodes(agent, VLLMRequestEngine(engines), tokenizer, prompts, labels, params,
                                         rollout.prompt_max_len + rollout.generate_max_len, agent_args.agent_timeout))
    return to_samples(episodes, tokenizer, prompts)
