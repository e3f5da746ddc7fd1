"""Playing episodes: all of a worker's episodes at once as asyncio tasks, each bounded by --agent-timeout, each
failure named by its episode (prompt, turn) and the user's lines of the traceback.

An episode's `llm_engine` is an EpisodeEngine: it forwards to the shared engine (which batches the episodes'
requests), counts the turns, times the generation and enforces --max-turns on executors that run their own loop.
"""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass
from typing import Any, Optional

from rlhfctl.agents.base import as_float
from rlhfctl.agents.loader import Agent, user_traceback
from rlhfctl.agents.record import CURRENT, EnvironmentContractError, EpisodeRecord
from rlhfctl.errors import RewardError


class AgentError(RewardError):
    """An episode failed: the environment or the executor raised, broke the contract, or ran past
    --agent-timeout. The run stops after a checkpoint, as for a failing reward."""


class TurnLimit(Exception):
    pass


class _Request:
    """What `llm_engine.generate(...)` returns: awaitable (OpenRLHF v0.10) and async-iterable, yielding the final
    output once (v0.8.9 iterated vLLM's AsyncLLMEngine stream)."""

    def __init__(self, coro: Any) -> None:
        self._coro = coro

    def __await__(self) -> Any:
        return self._coro.__await__()

    async def __aiter__(self) -> Any:
        yield await self._coro


class EpisodeEngine:
    """One episode's view of the shared engine: `await generate(prompt_token_ids, sampling_params)`."""

    def __init__(self, engine: Any, record: EpisodeRecord) -> None:
        self.engine = engine
        self.record = record

    def generate(self, prompt: Any, sampling_params: Any = None, request_id: Any = None, **kwargs: Any) -> _Request:
        return _Request(self._generate(prompt, sampling_params, **kwargs))

    async def _generate(self, prompt: Any, sampling_params: Any, **kwargs: Any) -> Any:
        record = self.record
        ids = prompt.get("prompt_token_ids") if isinstance(prompt, dict) else prompt
        if not isinstance(ids, (list, tuple)) or not all(isinstance(t, int) for t in ids):
            raise EnvironmentContractError("llm_engine.generate takes prompt token ids (a list of ints), got "
                                           f"{type(ids).__name__}")
        if record.max_turns is not None and record.generate_calls >= record.max_turns:
            raise TurnLimit(f"the executor asked for turn {record.generate_calls + 1}, past --max-turns "
                            f"{record.max_turns}")
        record.generate_calls += 1
        t0 = time.perf_counter()
        out = await self.engine.generate(list(ids), sampling_params, **kwargs)
        record.generate_seconds += time.perf_counter() - t0
        record.last_finish_reason = out.outputs[0].finish_reason if out.outputs else None
        return out


@dataclass
class Episode:
    """A finished episode, checked: tokens, the policy's spans, the environment's reward."""

    record: EpisodeRecord
    label: str
    tokens: list[int]
    action_ranges: list[tuple[int, int]]
    reward: float
    score: Optional[float]
    extra_logs: dict[str, float]
    truncated: bool
    seconds: float
    rollout_log_probs: Optional[list[float]] = None

    @property
    def env_seconds(self) -> float:
        if self.record.env_seconds is not None:
            return self.record.env_seconds
        return max(0.0, self.seconds - self.record.generate_seconds)


def _short(text: Any, limit: int = 200) -> str:
    text = str(text)
    return repr(text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)")


def describe(record: EpisodeRecord) -> str:
    return f"episode {record.index} (prompt {_short(record.prompt)}, turn {record.turn}, in {record.stage})"


async def play_episodes(agent: Agent, engine: Any, tokenizer: Any, prompts: list[str], labels: list[str],
                        sampling_params: Any, max_length: int, timeout: float,
                        return_exceptions: bool = False) -> list[Any]:
    """Every episode at once; the first failure cancels the others and raises AgentError naming it
    (`return_exceptions`: every episode runs to its end, and a failed one's AgentError takes its place)."""

    async def one(index: int) -> Episode:
        record = EpisodeRecord(index, prompts[index], agent.max_turns)
        CURRENT.set(record)
        t0 = time.perf_counter()
        play = agent.play(prompts[index], labels[index], copy.deepcopy(sampling_params), max_length, tokenizer,
                          EpisodeEngine(engine, record))
        try:
            result = await asyncio.wait_for(play, timeout)
        except asyncio.TimeoutError:
            raise AgentError(f"{describe(record)} did not finish within --agent-timeout {timeout:g} s") from None
        except Exception as exc:
            trace = user_traceback(exc, agent.path)
            error = AgentError(f"{describe(record)}: {type(exc).__name__}: {exc}")
            error.user_traceback = trace
            raise error from None
        return check_result(result, record, labels[index], time.perf_counter() - t0, max_length)

    tasks = [asyncio.ensure_future(one(i)) for i in range(len(prompts))]
    try:
        return list(await asyncio.gather(*tasks, return_exceptions=return_exceptions))
    finally:
        for task in tasks:
            task.cancel()


def check_result(result: Any, record: EpisodeRecord, label: str, seconds: float, max_length: int) -> Episode:
    """execute()'s dict, checked against OpenRLHF's contract; the sequence is cut to `max_length` as OpenRLHF
    cuts it."""
    def fail(why: str) -> AgentError:
        return AgentError(f"{describe(record)}: execute() returned {why}")

    if not isinstance(result, dict):
        raise fail(f"{type(result).__name__}, not a dict (observation_tokens, action_ranges, reward, ...); a "
                   "v0.8.9 executor puts it on result_queue")
    missing = [k for k in ("observation_tokens", "action_ranges", "reward") if k not in result]
    if missing:
        raise fail(f"a dict without {', '.join(map(repr, missing))}")
    tokens = result["observation_tokens"]
    if not isinstance(tokens, (list, tuple)) or not all(isinstance(t, int) for t in tokens):
        raise fail("observation_tokens that are not a list of token ids")
    ranges = []
    end_before = 0
    for item in result["action_ranges"] or []:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(x, int) for x in item)):
            raise fail(f"an action range {item!r}: each must be (start, end) token positions")
        start, end = item
        if not end_before <= start <= end <= len(tokens):
            raise fail(f"action range {item!r} outside the {len(tokens)} tokens or overlapping the one before")
        ranges.append((start, min(end, max_length)))
        end_before = end
    ranges = [(s, e) for s, e in ranges if s < e]
    if not ranges:
        raise fail("no action tokens (action_ranges is empty): the policy took no turn, so there is nothing to "
                   "train on (is the prompt longer than --prompt-max-len + --generate-max-len?)")
    if result["reward"] is None:
        raise fail("reward None: with --agent-func-path the environment gives the reward")
    try:
        reward = as_float(result["reward"], "reward")
        score = None if result.get("scores") is None else as_float(result["scores"], "scores")
        extra = {str(k): as_float(v, f"extra_logs[{k!r}]") for k, v in (result.get("extra_logs") or {}).items()}
    except EnvironmentContractError as exc:
        raise fail(str(exc)) from None
    logprobs = result.get("rollout_log_probs")
    return Episode(record, label, list(tokens[:max_length]), ranges, reward, score, extra,
                   bool(result.get("truncated", record.last_finish_reason == "length")), seconds,
                   list(logprobs[:max_length]) if logprobs else None)
