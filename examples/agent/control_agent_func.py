"""Control for benchmarks/agent_demo.py: the two-try environment of agent_func.py, same dialogue, but each reward is
drawn at random (1.0, 0.5 or 0 with the rates a policy at ~45% sees) whatever the answer. Training on it must not
raise accuracy: a gain with agent_func.py is then the environment's reward, not the optimiser's."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_func import AgentInstance as TwoTries  # noqa: E402

from rlhfctl.agents import MultiTurnAgentExecutor  # noqa: E402

_rng = random.Random(0)


class AgentInstance(TwoTries):
    async def step(self, states: dict, **kwargs: Any) -> dict:
        out = await super().step(states, **kwargs)
        out["rewards"] = out["scores"] = _rng.choice([1.0, 0.0]) * (1.0 if self.tries == 1 else 0.5)
        return out


class AgentExecutor(MultiTurnAgentExecutor):
    def __init__(self) -> None:
        super().__init__(AgentInstance)
