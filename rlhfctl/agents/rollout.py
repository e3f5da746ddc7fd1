"""An actor worker's agent rollout: play the episodes, then lay them out as Samples for PPO.

Layout (ppo/experience.py): the tokens before the first policy turn are the prompt part, left-padded; everything
after is the response part, right-padded: the policy's turns have action_mask 1, the environment's replies
action_mask 0 and attention 1 (the policy reads them, it is not trained to write them). The reward each episode's
environment gave travels with the samples (`Samples.environment`), with agent/* statistics per episode.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Optional, TYPE_CHECKING

import torch

from rlhfctl.agents.episodes import Episode, play_episodes
from rlhfctl.agents.hf_engine import HFEngine
from rlhfctl.agents.loader import Agent, load_agent
from rlhfctl.agents.sampling import SamplingParams
from rlhfctl.rollout.samples import Samples
from rlhfctl.rewards.base import RewardBatch

if TYPE_CHECKING:
    from rlhfctl.config import AgentArgs, ModelLoadArgs, PretrainArgs, RolloutArgs

_agents: dict[tuple[str, Optional[int]], Agent] = {}


def cached_agent(path: str, max_turns: Optional[int]) -> Agent:
    """The agent file is imported once per worker process, as OpenRLHF loads it once per engine."""
    key = (path, max_turns)
    if key not in _agents:
        _agents[key] = load_agent(path, max_turns)
    return _agents[key]


_tokenizers: dict[str, Any] = {}


def cached_tokenizer(model: PretrainArgs, load: ModelLoadArgs) -> Any:
    """The policy's tokenizer, loaded once per process (where episodes run outside the actor workers)."""
    from rlhfctl.models.actor import load_tokenizer

    path = model.pretrain
    assert path is not None
    if path not in _tokenizers:
        _tokenizers[path] = load_tokenizer(path, disable_fast_tokenizer=load.disable_fast_tokenizer)
    return _tokenizers[path]


def sampling_params(rollout: RolloutArgs, temperature: float) -> Any:
    """What OpenRLHF hands execute(): vllm.SamplingParams with vLLM engines, here our stand-in (same fields)."""
    return SamplingParams(temperature=temperature, top_p=rollout.top_p, max_tokens=rollout.generate_max_len,
                          skip_special_tokens=False, logprobs=None)


def agent_rollout(agent_args: AgentArgs, rollout: RolloutArgs, model: Any, tokenizer: Any, prompts: list[str],
                  labels: list[str], temperature: float, engine: Any = None) -> Samples:
    """One episode per prompt entry, all at once; `engine` defaults to batched HF generation on `model`."""
    assert agent_args.agent_func_path is not None
    agent = cached_agent(agent_args.agent_func_path, agent_args.max_turns)
    batch = rollout.micro_rollout_batch_size * rollout.n_samples_per_prompt  # what one HF generate call holds
    engine = engine if engine is not None else HFEngine(model, tokenizer, max_batch=batch)
    max_length = rollout.prompt_max_len + rollout.generate_max_len
    episodes = asyncio.run(play_episodes(agent, engine, tokenizer, prompts, labels,
                                         sampling_params(rollout, temperature), max_length, agent_args.agent_timeout))
    return to_samples(episodes, tokenizer, prompts)


def to_samples(episodes: list[Episode], tokenizer: Any, prompts: list[str]) -> Samples:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    firsts = [e.action_ranges[0][0] for e in episodes]
    P = max(firsts)
    A = max(len(e.tokens) - f for e, f in zip(episodes, firsts))
    B = len(episodes)
    sequences = torch.full((B, P + A), pad, dtype=torch.long)
    attention = torch.zeros((B, P + A), dtype=torch.long)
    action_mask = torch.zeros((B, A), dtype=torch.long)
    responses, queries = [], []
    for row, (e, first) in enumerate(zip(episodes, firsts)):
        prompt, response = e.tokens[:first], e.tokens[first:]
        sequences[row, P - len(prompt):P] = torch.tensor(prompt, dtype=torch.long)
        sequences[row, P:P + len(response)] = torch.tensor(response, dtype=torch.long)
        attention[row, P - len(prompt):P + len(response)] = 1
        for start, end in e.action_ranges:
            action_mask[row, start - first:end - first] = 1
        responses.append(tokenizer.decode(response, skip_special_tokens=False))
        queries.append(tokenizer.decode(e.tokens, skip_special_tokens=False))
    truncated = torch.tensor([e.truncated for e in episodes], dtype=torch.bool)
    rollout_log_probs = None
    if all(e.rollout_log_probs is not None for e in episodes):  # the engines' log-probs of the policy's tokens
        rollout_log_probs = torch.zeros((B, A), dtype=torch.float32)
        for row, (e, first) in enumerate(zip(episodes, firsts)):
            lp = (e.rollout_log_probs or [])[first:first + A]
            rollout_log_probs[row, :len(lp)] = torch.tensor(lp, dtype=torch.float32)
        rollout_log_probs = rollout_log_probs * action_mask
    return Samples(sequences, attention, action_mask, list(prompts), [e.label for e in episodes], responses,
                   truncated, rollout_log_probs, queries=queries,
                   environment=environment_rewards(episodes, action_mask))


def environment_rewards(episodes: list[Episode], action_mask: torch.Tensor) -> RewardBatch:
    """The environment's rewards and scores, its extra_logs, and per episode: agent/turns, agent/turn<k>_reward
    (NaN where the episode ended before turn k), agent/env_time, agent/episode_time, agent/env_tokens."""
    logs: dict[str, list[float]] = {}
    nan = math.nan
    for key in sorted({k for e in episodes for k in e.extra_logs}):
        logs[key] = [e.extra_logs.get(key, nan) for e in episodes]
    logs["agent/turns"] = [float(len(e.action_ranges)) for e in episodes]
    most = max(len(e.record.turn_rewards) for e in episodes)
    for k in range(most):
        logs[f"agent/turn{k + 1}_reward"] = [e.record.turn_rewards[k] if k < len(e.record.turn_rewards) else nan
                                             for e in episodes]
    logs["agent/env_time"] = [e.env_seconds for e in episodes]
    logs["agent/episode_time"] = [e.seconds for e in episodes]
    logs["agent/env_tokens"] = [float(len(e.tokens) - e.action_ranges[0][0] - int(m.sum()))
                                for e, m in zip(episodes, action_mask)]
    scores = None if all(e.score is None for e in episodes) else [
        e.score if e.score is not None else e.reward for e in episodes]
    return RewardBatch([e.reward for e in episodes], scores, logs)
