"""The rollout interface PPOTrainer generates through, and the log-prob agreement metric of engines that are not
the actor itself."""

from __future__ import annotations

from typing import Optional, Protocol

import torch

from rlhfctl.data import PromptExample
from rlhfctl.rollout.samples import Samples


class Rollout(Protocol):
    """Generation for PPOTrainer: `n` samples per prompt, rows prompt-major (a prompt's group is contiguous)."""

    def generate(self, batch: list[PromptExample], n: int, step: int, evaluation: bool, round: int) -> Samples:
        ...

    def sync_weights(self) -> Optional[float]:
        """Bring the generator's weights up to the actor's; seconds taken, or None when it IS the actor."""
        ...

    def abort(self) -> None:
        """Abort the generation in flight, whose caller was stopped (a no-op where there is nothing to abort)."""
        ...

    def close(self) -> None:
        ...


def logprob_diff(rollout_log_probs: torch.Tensor, log_probs: torch.Tensor, action_mask: torch.Tensor
                 ) -> dict[str, float]:
    """|engine log-prob - actor log-prob| of the sampled tokens, mean and max over response tokens: near 0 when
    the engine generates with the actor's weights; a jump points at a missed weight sync or a precision problem."""
    diff = (rollout_log_probs - log_probs).abs() * action_mask
    tokens = action_mask.sum().clamp(min=1)
    return {"rollout/logprob_diff_mean": float(diff.sum() / tokens), "rollout/logprob_diff_max": float(diff.max())}
