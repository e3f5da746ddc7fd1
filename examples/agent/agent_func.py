"""A two-try arithmetic environment for `train-ppo --agent-func-path` (OpenRLHF's multi-turn agent contract).

The policy answers "47+25="; a right first answer scores 1.0 and ends the episode. A wrong one gets the
environment's reply, "wrong, try again", written for this character-level tokenizer (digits, + - = and a few
markers) as the `<|user|>` marker followed by the question again; a right second answer scores 0.5, a wrong one 0.
The reply's tokens are in the sequence the policy reads but are not trained on (action_mask 0).

    rlhfctl check-reward --agent-func-path examples/agent/agent_func.py --prompt-data examples/arithmetic/test.jsonl \
        --label-key answer --pretrain examples/arithmetic/policy
    rlhfctl train-ppo --config examples/agent/train_agent.yaml
"""

from __future__ import annotations

import re
from typing import Any

from rlhfctl.agents import AgentInstanceBase, MultiTurnAgentExecutor

FIRST_TRY, SECOND_TRY = 1.0, 0.5
TRY_AGAIN = "<|user|>"  # "wrong, try again", in the tokens this policy's tokenizer has
_SPECIAL = re.compile(r"<\|[^|<>]*\|>|</?s>|<pad>|<unk>")
_NUMBER = re.compile(r"-?\d+")


def answer_of(action_text: str) -> int | None:
    """The last integer the policy wrote in this turn (special tokens dropped), or None."""
    found = _NUMBER.findall(_SPECIAL.sub("", action_text))
    return int(found[-1]) if found else None


class AgentInstance(AgentInstanceBase):
    """One episode: at most two answers to one question."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.question = ""
        self.tries = 0
        self.first_right = 0.0

    async def reset(self, states: dict, **kwargs: Any) -> dict:
        self.question = states["observation"]
        return {"observation": self.question}

    async def step(self, states: dict, **kwargs: Any) -> dict:
        self.tries += 1
        right = answer_of(states["action_text"]) == int(str(states["label"]).strip())
        if self.tries == 1:
            self.first_right = float(right)
        reward = (FIRST_TRY if self.tries == 1 else SECOND_TRY) if right else 0.0
        done = right or self.tries >= 2
        return {
            "rewards": reward,
            "scores": reward,
            "environment_feedback": "" if done else TRY_AGAIN + self.question,
            "done": done,
            "sampling_params": states.get("sampling_params"),
            "extra_logs": {"first_try_right": self.first_right,
                           "second_try_right": float(right and self.tries == 2)},
        }


class AgentExecutor(MultiTurnAgentExecutor):
    def __init__(self) -> None:
        super().__init__(AgentInstance)
