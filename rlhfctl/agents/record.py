"""What the runner knows about one episode while it plays: the turn under way, time in generation and in the
environment, the reward of each turn. The executor finds its episode's record through a context variable, so the
user-facing signatures stay OpenRLHF's."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class EpisodeRecord:
    index: int
    prompt: str
    max_turns: Optional[int] = None
    generate_calls: int = 0
    generate_seconds: float = 0.0
    env_seconds: Optional[float] = None  # measured by MultiTurnAgentExecutor; else episode time - generation time
    turn_rewards: list[float] = field(default_factory=list)
    last_finish_reason: Optional[str] = None
    stage: str = "execute"  # what user code was running when it failed: reset, step, execute

    @property
    def turn(self) -> int:
        """The turn under way (1-based): one turn = one generation by the policy and the environment's answer."""
        return max(1, self.generate_calls)


CURRENT: contextvars.ContextVar[Optional[EpisodeRecord]] = contextvars.ContextVar("rlhfctl_episode", default=None)


def current_record() -> EpisodeRecord:
    """The episode this task plays (a detached record when user code runs an executor outside rlhfctl's runner)."""
    record = CURRENT.get()
    return record if record is not None else EpisodeRecord(index=0, prompt="")


class EnvironmentContractError(ValueError):
    """A reset() or step() answer that breaks OpenRLHF's contract (missing key, wrong type, non-finite reward)."""
