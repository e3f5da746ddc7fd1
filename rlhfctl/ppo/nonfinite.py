"""Finding a NaN or infinity before it is trained on: in the rewards, in what the models said about the samples,
and in the advantages, each named by what it is and which sample carries it.

The driver checks a step's experience before any worker trains on it, so stopping there leaves the weights exactly
as the last good step left them; a loss or gradient norm that goes non-finite inside an update is caught by the
training engine before the optimizer applies it (distributed/engine.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from rlhfctl.errors import NonFiniteError
from rlhfctl.ppo.experience import Experience

# Per-token fields of the experience, checked in this order (the first non-finite one is named), with their names
# in messages: inputs from the models first, then what the driver derived from them.
# The reference's log-probs are kept in the experience only with --use-kl-loss; otherwise they reach it as the KL,
# which is checked right after them (the actor's own log-probs come first, so a non-finite KL is the reference's).
_CHECKED = (("log_probs", "actor log-probs"), ("ref_log_probs", "reference log-probs"),
            ("kl", "reference log-probs (through the KL)"), ("values", "critic values"), ("advantages", "advantages"),
            ("returns", "returns"))


@dataclass
class Finding:
    """`what` of sample `index` is `value` (NaN or +-inf)."""

    what: str
    index: int
    value: float

    def describe(self) -> str:
        return f"{self.what} of sample {self.index} is {self.value}"

    @property
    def from_trained_weights(self) -> bool:
        """The trained actor or critic itself computed it: its weights are not a good state to save."""
        return self.what in ("actor log-probs", "critic values")


def check_rewards(rewards: Tensor) -> Optional[Finding]:
    """The first sample whose sequence reward is not finite."""
    bad = (~torch.isfinite(rewards)).nonzero()
    if len(bad) == 0:
        return None
    i = int(bad[0, 0])
    return Finding("reward", i, float(rewards[i]))


def check_experience(experience: Experience) -> Optional[Finding]:
    """The first per-token field (in `_CHECKED` order) with a non-finite value on a response token, and its sample."""
    mask = experience.action_mask.bool()
    for name, label in _CHECKED:
        values = getattr(experience, name)
        if values is None:
            continue
        bad = (~torch.isfinite(values)) & mask
        rows = bad.any(dim=1).nonzero()
        if len(rows):
            i = int(rows[0, 0])
            return Finding(label, i, float(values[i][bad[i]][0]))
    return None


def first_nonfinite_stat(stats: list[dict[str, float]], names: tuple[str, ...]) -> Optional[tuple[str, float]]:
    """(name, value) of the first non-finite entry among `names` in micro-batch stats, e.g. ("policy_loss", nan)."""
    for record in stats:
        for name in names:
            value = record.get(name)
            if value is not None and not math.isfinite(value):
                return name, value
    return None


class NonFiniteUpdate(NonFiniteError):
    """Raised by a trained role's worker: an update's loss or gradient norm was not finite, so the optimizer did not
    apply it. `updates_applied`: updates this role had applied earlier in the same step."""

    def __init__(self, message: str, role: str, updates_applied: int) -> None:
        super().__init__(message)
        self.role = role
        self.updates_applied = updates_applied
