"""`check-reward --agent-func-path`: play a few episodes before training and show what happened.

The policy is --pretrain (or --responses model:DIR), generating as train-ppo does (batched HF generate, sampled at
--temperature). With --responses oracle or shuffled given, each turn is scripted instead: the label itself, or
another row's label, tokenized with --pretrain's tokenizer or a small built-in one, so an environment's right and
wrong paths show without a model. Each episode's transcript (prompt, the policy's turns, the environment's
replies), its per-turn rewards and what broke are printed; exit 1 when an episode failed, 0 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any, Optional

from rlhfctl.agents.episodes import Episode, play_episodes
from rlhfctl.agents.loader import load_agent
from rlhfctl.agents.sampling import CompletionOutput, RequestOutput, SamplingParams, read_params
from rlhfctl.config import CheckRewardConfig

DEFAULT_EPISODES = 8


class ScriptedEngine:
    """An llm_engine whose every answer is a fixed text per prompt (the label): the environment under test, not
    a policy."""

    def __init__(self, tokenizer: Any, answers: dict[str, str]) -> None:
        self.tokenizer = tokenizer
        self.answers = answers  # first prompt tokens decoded -> answer text
        self.eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    async def generate(self, prompt_token_ids: list[int], sampling_params: Any, **_: Any) -> RequestOutput:
        text = self.tokenizer.decode(prompt_token_ids, skip_special_tokens=False)
        answer = next((a for p, a in self.answers.items() if text.startswith(p)), "")
        limit = read_params(sampling_params)["max_tokens"] or 1 << 30
        ids = (list(self.tokenizer(answer, add_special_tokens=False)["input_ids"]) + self.eos)[:limit]
        finish = "stop" if ids and ids[-1] in self.eos else "length"
        return RequestOutput("scripted", list(prompt_token_ids), [CompletionOutput(
            0, self.tokenizer.decode(ids, skip_special_tokens=False), ids, finish_reason=finish)])


def _policy_dir(cfg: CheckRewardConfig) -> Optional[str]:
    """model:DIR, else --pretrain unless --responses oracle/shuffled was asked for (then its tokenizer only)."""
    kind, _, arg = cfg.responses.partition(":")
    if kind == "model":
        return arg
    return None if "responses" in cfg.model_fields_set else cfg.pretrain


def check_agent(cfg: CheckRewardConfig) -> int:
    from rlhfctl.checks.samples import load_examples
    from rlhfctl.checks.report import Report
    from rlhfctl.config.hub_ids import resolve_fields
    from rlhfctl.config.slices import CheckSampleGroups
    from rlhfctl.models.actor import load_policy, load_tokenizer

    assert cfg.agent_func_path is not None
    agent = load_agent(cfg.agent_func_path, cfg.max_turns)
    cfg = resolve_fields(cfg, ["responses", "pretrain"])
    policy = _policy_dir(cfg)
    if policy is None and cfg.label_key is None:
        from rlhfctl.errors import ConfigError

        raise ConfigError("--agent-func-path without --pretrain scripts each turn with the label: give --label-key")
    if policy is None and cfg.apply_chat_template:
        from rlhfctl.errors import ConfigError

        raise ConfigError("--apply-chat-template needs --pretrain DIR (the tokenizer whose template train-ppo uses)")
    tokenizer_dir = policy or cfg.pretrain
    report = Report(reward=cfg.agent_func_path, responses=cfg.responses)
    examples = load_examples(CheckSampleGroups.of(cfg), report)
    if not examples:
        print(report.checks[-1].detail if report.checks else "no rows")
        return 1
    examples = examples[:cfg.max_samples or DEFAULT_EPISODES]
    prompts, labels = [e.prompt for e in examples], [e.label for e in examples]
    if tokenizer_dir is None:
        from rlhfctl.models.tiny import build_tokenizer  # a scripted answer needs tokens, not a model's

        tokenizer = build_tokenizer()
    else:
        tokenizer = load_tokenizer(tokenizer_dir, disable_fast_tokenizer=cfg.disable_fast_tokenizer)
    if policy is not None:
        from rlhfctl.agents.hf_engine import HFEngine

        engine: Any = HFEngine(load_policy(policy, bf16=False).eval(), tokenizer)
        who = f"the policy {policy}"
    else:
        scripted = labels if cfg.responses == "oracle" else random.Random(cfg.seed).sample(labels, len(labels))
        engine = ScriptedEngine(tokenizer, dict(zip(prompts, scripted)))
        who = "the label as every answer" if cfg.responses == "oracle" else "another row's label as every answer"
    import torch

    torch.manual_seed(cfg.seed)
    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.generate_max_len,
                            skip_special_tokens=False)
    results = asyncio.run(play_episodes(agent, engine, tokenizer, prompts, labels, params,
                                        cfg.prompt_max_len + cfg.generate_max_len, cfg.agent_timeout,
                                        return_exceptions=True))
    episodes = [transcript(r, tokenizer) if isinstance(r, Episode) else {"error": str(r), "traceback":
                getattr(r, "user_traceback", "")} for r in results]
    for i, (prompt, label) in enumerate(zip(prompts, labels)):
        episodes[i] = {"episode": i, "prompt": prompt, "label": label, **episodes[i]}
    failed = sum(1 for e in episodes if "error" in e)
    if cfg.json_output:
        print(json.dumps({"agent": cfg.agent_func_path, "policy": who, "episodes": episodes, "failed": failed}))
    else:
        _print(cfg.agent_func_path, who, episodes, failed)
    return 1 if failed else 0


def transcript(e: Episode, tokenizer: Any) -> dict:
    """The episode as alternating turns: the policy's spans (action_mask 1) and what the environment added."""
    turns: list[dict] = []
    cursor = e.action_ranges[0][0]
    for k, (start, end) in enumerate(e.action_ranges):
        if start > cursor:
            turns.append({"role": "environment", "text": tokenizer.decode(e.tokens[cursor:start],
                                                                          skip_special_tokens=False)})
        turn = {"role": "policy", "text": tokenizer.decode(e.tokens[start:end], skip_special_tokens=False)}
        if k < len(e.record.turn_rewards):
            turn["reward"] = e.record.turn_rewards[k]
        turns.append(turn)
        cursor = end
    if cursor < len(e.tokens):
        turns.append({"role": "environment", "text": tokenizer.decode(e.tokens[cursor:], skip_special_tokens=False)})
    return {"turns": turns, "reward": e.reward, "score": e.score, "extra_logs": e.extra_logs,
            "truncated": e.truncated, "seconds": round(e.seconds, 3)}


def _print(path: str, who: str, episodes: list[dict], failed: int) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    console.print(f"[bold]{escape(path)}[/]: {len(episodes)} episodes, answered by {escape(who)}")
    for e in episodes:
        console.print(f"\n[bold]episode {e['episode']}[/] prompt {escape(repr(e['prompt']))}, label "
                      f"{escape(repr(e['label']))}")
        if "error" in e:
            console.print(f"  [red]FAILED[/] {escape(e['error'])}")
            if e["traceback"]:
                console.print(escape(e["traceback"].rstrip()))
            continue
        for t in e["turns"]:
            reward = f"  -> reward {t['reward']:g}" if "reward" in t else ""
            console.print(f"  {t['role']:>11}: {escape(repr(t['text']))}{reward}")
        logs = ", ".join(f"{k} {v:g}" for k, v in e["extra_logs"].items())
        console.print(f"  reward {e['reward']:g}" + (f", score {e['score']:g}" if e["score"] is not None else "")
                      + (f", {escape(logs)}" if logs else "") + (", truncated" if e["truncated"] else ""))
    rewards = [e["reward"] for e in episodes if "error" not in e]
    mean = f", mean reward {sum(rewards) / len(rewards):.3f}" if rewards else ""
    console.print(f"\n{len(episodes) - failed} of {len(episodes)} episodes ran{mean}"
                  + (f"; [red]{failed} failed[/]" if failed else ""))
