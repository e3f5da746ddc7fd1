"""OpenRLHF's agent contract, under rlhfctl's own module path: `from rlhfctl.agents import ...`.

Two forms of agent_func.py are read, as OpenRLHF reads them:
- an `AgentExecutor` with `async execute(prompt, label, sampling_params, max_length, hf_tokenizer, llm_engine,
  images=None)` returning OpenRLHF v0.10's dict (observation_tokens, action_ranges, reward, scores, extra_logs, ...);
  v0.8.9's executor, built as `AgentExecutor(max_steps, max_length, llm_engine, hf_tokenizer, result_queue)` with
  `execute(prompt, label, sampling_params)`, runs too;
- an `AgentInstance` (async `reset(states)` and `step(states)`) wrapped by `MultiTurnAgentExecutor`: the policy
  answers, the environment replies, until `done`, --max-turns or the length budget.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import math
import time
from abc import ABC, abstractmethod
from typing import Any, Optional

from rlhfctl.agents.record import EnvironmentContractError, current_record


class AgentInstanceBase(ABC):
    """One environment, created per episode. `reset` returns {"observation": text}; `step` returns {"rewards",
    "environment_feedback", "done", and optionally "scores", "sampling_params", "extra_logs"}."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def reset(self, states: dict, **kwargs: Any) -> dict:
        return states

    @abstractmethod
    async def step(self, states: dict, **kwargs: Any) -> dict:
        raise NotImplementedError("AgentInstance.step is not implemented")


class AgentExecutorBase(ABC):
    """Plays one episode per `execute` call. Subclass it with your own `execute`, or use MultiTurnAgentExecutor.

    The constructor's arguments are OpenRLHF v0.8.9's (that vintage's executors call
    `super().__init__(AgentInstance, max_steps, max_length, llm_engine, hf_tokenizer, result_queue)`); v0.10's
    executors take none."""

    def __init__(self, agent_instance_cls: Optional[type] = None, max_steps: Optional[int] = None,
                 max_length: Optional[int] = None, llm_engine: Any = None, hf_tokenizer: Any = None,
                 result_queue: Optional[asyncio.Queue] = None) -> None:
        if agent_instance_cls is not None:
            _check_instance_cls(agent_instance_cls)
        self.agent_instance_cls = agent_instance_cls
        self.max_steps = max_steps
        self.max_length = max_length
        self.llm_engine = llm_engine
        self.hf_tokenizer = hf_tokenizer
        self.result_queue = result_queue

    async def generate(self, prompt_ids: list[int], sampling_params: Any) -> Any:
        """v0.8.9's helper: one request to the engine, its final RequestOutput."""
        return await self.llm_engine.generate(prompt_ids, sampling_params)

    async def execute(self, prompt: str, label: Any, sampling_params: Any, max_length: Optional[int] = None,
                      hf_tokenizer: Any = None, llm_engine: Any = None, images: Any = None) -> dict:
        """v0.8.9's default: the multi-turn loop over `agent_instance_cls`, result also put on `result_queue`."""
        if self.agent_instance_cls is None:
            raise NotImplementedError("AgentExecutor must define async execute(prompt, label, sampling_params, "
                                      "max_length, hf_tokenizer, llm_engine), or subclass MultiTurnAgentExecutor")
        max_turns = _smaller(self.max_steps, current_record().max_turns)
        result = await play_turns(self.agent_instance_cls, prompt, label, sampling_params,
                                  max_length or self.max_length, hf_tokenizer or self.hf_tokenizer,
                                  llm_engine or self.llm_engine, max_turns, images)
        if self.result_queue is not None:
            await self.result_queue.put(result)
        return result


class MultiTurnAgentExecutor(AgentExecutorBase):
    """OpenRLHF v0.10's multi-turn executor: `AgentExecutor(MultiTurnAgentExecutor)` with
    `super().__init__(AgentInstance)`."""

    def __init__(self, agent_instance_cls: type) -> None:
        super().__init__(agent_instance_cls)

    async def execute(self, prompt: str, label: Any, sampling_params: Any, max_length: Optional[int] = None,
                      hf_tokenizer: Any = None, llm_engine: Any = None, images: Any = None) -> dict:
        assert self.agent_instance_cls is not None
        return await play_turns(self.agent_instance_cls, prompt, label, sampling_params, max_length, hf_tokenizer,
                                llm_engine, current_record().max_turns, images)


def _check_instance_cls(cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, AgentInstanceBase)):
        raise TypeError(f"{getattr(cls, '__name__', cls)!r} must subclass rlhfctl.agents.AgentInstanceBase")


def _smaller(a: Optional[int], b: Optional[int]) -> Optional[int]:
    return b if a is None else a if b is None else min(a, b)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def new_instance(cls: type) -> Any:
    """An AgentInstance; v0.8.9's were Ray actors with an `async def __init__`, which is awaited here."""
    if inspect.iscoroutinefunction(cls.__init__):
        obj = cls.__new__(cls)
        await obj.__init__()
        return obj
    return cls()


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def as_float(value: Any, what: str) -> float:
    """A reward given as a number, a one-element tensor/array/list, as OpenRLHF's `.item()` reads it."""
    if hasattr(value, "numel") and hasattr(value, "item"):
        if value.numel() != 1:
            raise EnvironmentContractError(f"{what} must be one number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    elif isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise EnvironmentContractError(f"{what} must be one number, got a list of {len(value)}")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise EnvironmentContractError(f"{what} must be a number, got {type(value).__name__} {value!r:.80}")
    out = float(value)
    if not math.isfinite(out):
        raise EnvironmentContractError(f"{what} is {out}: a reward must be finite")
    return out


def read_step(result: Any) -> tuple[float, Optional[float], str, bool, dict, Any]:
    """(reward, score, feedback, done, extra_logs, sampling_params) of a step() answer, checked."""
    if not isinstance(result, dict):
        raise EnvironmentContractError(f"step() must return a dict, got {type(result).__name__}")
    missing = [k for k in ("rewards", "environment_feedback", "done") if k not in result]
    if missing:
        raise EnvironmentContractError(f"step()'s dict lacks {', '.join(map(repr, missing))} (it has "
                                       f"{', '.join(map(repr, result)) or 'no keys'})")
    reward = as_float(result["rewards"], "step()['rewards']")
    score = None if result.get("scores") is None else as_float(result["scores"], "step()['scores']")
    feedback = result["environment_feedback"]
    if not isinstance(feedback, str):
        raise EnvironmentContractError(f"step()['environment_feedback'] must be text, got {type(feedback).__name__}")
    extra = result.get("extra_logs") or {}
    if not isinstance(extra, dict):
        raise EnvironmentContractError(f"step()['extra_logs'] must be a dict, got {type(extra).__name__}")
    return reward, score, feedback, bool(result["done"]), extra, result.get("sampling_params")


async def play_turns(instance_cls: type, prompt: str, label: Any, sampling_params: Any, max_length: Optional[int],
                     tokenizer: Any, engine: Any, max_turns: Optional[int], images: Any = None) -> dict:
    """The multi-turn loop: policy turn, environment reply, until done, `max_turns` or the length budget.

    As OpenRLHF's MultiTurnAgentExecutor, except that each turn generates at most the initial
    `sampling_params.max_tokens` (rlhfctl's --generate-max-len), and the episode fits `max_length` (prompt +
    response budget). Environment text is tokenized and appended; it is in the sequence but not an action."""
    if images:
        raise EnvironmentContractError("images were given: vision-language prompts are not supported")
    if max_length is None or tokenizer is None or engine is None:
        raise TypeError("execute() needs max_length, hf_tokenizer and llm_engine")
    record = current_record()
    env_seconds = 0.0
    record.stage = "reset"
    instance = await new_instance(instance_cls)
    t0 = time.perf_counter()
    reset = await _maybe_await(instance.reset({"observation": prompt, "label": label}))
    env_seconds += time.perf_counter() - t0
    if not isinstance(reset, dict) or not isinstance(reset.get("observation"), str):
        raise EnvironmentContractError(f"reset() must return {{'observation': text}}, got {reset!r:.120}")
    observation_text = reset["observation"]
    tokens = _encode(tokenizer, observation_text)
    per_turn = getattr(sampling_params, "max_tokens", None) or max_length
    if len(tokens) > max_length - min(per_turn, max_length - 1):  # leave room for the first turn, cut from the left
        tokens = tokens[-(max_length - min(per_turn, max_length - 1)):]
        observation_text = tokenizer.decode(tokens, skip_special_tokens=False)
    want_logprobs = getattr(sampling_params, "logprobs", None) is not None
    rollout_log_probs: Optional[list[float]] = [0.0] * len(tokens) if want_logprobs else None
    action_ranges: list[tuple[int, int]] = []
    total_reward, final_score, extra_logs = 0.0, None, {}
    turns = 0
    while max_turns is None or turns < max_turns:
        budget = min(per_turn, max_length - len(tokens))
        if budget <= 0:
            break
        params = copy.deepcopy(sampling_params)
        params.max_tokens = budget
        record.stage = "execute"
        output = (await engine.generate(tokens, params)).outputs[0]
        action = list(output.token_ids)
        turns += 1
        action_ranges.append((len(tokens), len(tokens) + len(action)))
        record.stage = "step"
        t0 = time.perf_counter()
        answer = await _maybe_await(instance.step({"observation_text": observation_text, "action_text": output.text,
                                                   "label": label, "sampling_params": sampling_params}))
        env_seconds += time.perf_counter() - t0
        reward, score, feedback, done, extra_logs, next_params = read_step(answer)
        record.turn_rewards.append(reward)
        total_reward += reward
        final_score = score if score is not None else total_reward
        feedback_tokens = _encode(tokenizer, feedback) if feedback else []
        observation_text = observation_text + output.text + feedback
        if rollout_log_probs is not None:
            rollout_log_probs += _sampled_logprobs(output, action) + [0.0] * len(feedback_tokens)
        tokens = tokens + action + feedback_tokens
        if next_params is not None:
            sampling_params = next_params
        if done:
            break
    record.stage = "execute"
    record.env_seconds = env_seconds
    return {"prompt": prompt, "label": label, "observation_tokens": tokens, "action_ranges": action_ranges,
            "reward": total_reward, "scores": final_score, "extra_logs": extra_logs,
            "rollout_log_probs": rollout_log_probs, "truncated": record.last_finish_reason == "length"}


def _sampled_logprobs(output: Any, action: list[int]) -> list[float]:
    if not output.logprobs:
        return [0.0] * len(action)
    out = []
    for token, entry in zip(action, output.logprobs):
        hit = entry.get(token) if entry else None
        out.append(float(hit.logprob) if hit is not None else 0.0)
    return out
