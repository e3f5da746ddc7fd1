"""The run's Ray roles, typed by their worker classes, and what the loop asks of them as whole roles: the forwards
of a batch, a step's training, checkpoints. Each worker gets its contiguous share of a batch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TypeVar

from rlhfctl.distributed.roles import Method, RoleGroup, get
from rlhfctl.models.ring_attention import role_ring
from rlhfctl.ppo.experience import Experience, Samples
from rlhfctl.ppo.nonfinite import NonFiniteUpdate
from rlhfctl.ppo.workers import CriticWorker, PolicyWorker, ReferenceWorker, RewardModelWorker
from rlhfctl.shards import data_parallel_shards

W = TypeVar("W")


def _sharded_forward(group: RoleGroup[W], method: Method[W, [Any, Any, int], Any], samples: Samples,
                     ring: int, followers: list[Any]) -> list[Any]:
    """Start `method(sequences, attention_mask, num_actions)` on each worker with its rows of `samples`; the
    futures of each ring's first worker (the others return the same values: their futures go to `followers`)."""
    num_actions = samples.action_mask.shape[1]
    futures = [group.on(rank, method, samples.sequences[s], samples.attention_mask[s], num_actions)
               for rank, s in enumerate(data_parallel_shards(len(samples), len(group), ring))]
    followers += [f for rank, f in enumerate(futures) if rank % ring]
    return futures[::ring]


def collect(futures: list[Any]) -> list[Any]:
    """Each future's result, or the NonFiniteUpdate it raised (every worker is waited for, so none is still
    training when the driver decides what to save)."""
    out: list[Any] = []
    for future in futures:
        try:
            out.append(get(future))
        except NonFiniteUpdate as exc:
            out.append(exc)
    return out


@dataclass
class Forwards:
    """A batch's forwards under way: the actor's and reference's log-probs, the critic's values (futures)."""

    log_probs: list[Any]
    ref_log_probs: list[Any]
    values: list[Any]
    followers: list[Any]  # the other workers of each ring (--ring-attn-size): waited for, their values unused


@dataclass
class Update:
    """A step's training under way on the trained roles (futures)."""

    actor: list[Any]
    critic: list[Any]

    def wait(self) -> None:
        """Until every worker is done (an interrupted run saves the step's end)."""
        collect(self.actor + self.critic)


@dataclass
class Roles:
    actor: RoleGroup[PolicyWorker]
    ref: Optional[RoleGroup[ReferenceWorker]] = None
    critic: Optional[RoleGroup[CriticWorker]] = None
    reward: Optional[RoleGroup[RewardModelWorker]] = None
    ref_in_actor: bool = False  # LoRA: the actor's base with the adapter off is the reference (no ref workers)
    ring: int = 1  # --ring-attn-size: the actor's and critic's workers share rows in rings of this many
    actor_log_probs: bool = True  # False: the actor's training forward gives them (shaping.old_log_probs_in_training)

    @property
    def trained(self) -> set[str]:
        """Roles holding training state (a checkpoint's parts)."""
        return {"actor"} | ({"critic"} if self.critic is not None else set())

    def forwards(self, samples: Samples) -> Forwards:
        followers: list[Any] = []
        return Forwards(
            _sharded_forward(self.actor, PolicyWorker.log_probs, samples, self.ring, followers)
            if self.actor_log_probs else [],
            _sharded_forward(self.ref, ReferenceWorker.log_probs, samples, role_ring(self.ring, len(self.ref)),
                             followers) if self.ref is not None else
            _sharded_forward(self.actor, PolicyWorker.ref_log_probs, samples, self.ring, followers)
            if self.ref_in_actor else [],
            _sharded_forward(self.critic, CriticWorker.values, samples, self.ring, followers)
            if self.critic is not None else [],
            followers)

    def train(self, experience: Experience, step: int, actor_frozen: bool) -> Update:
        """Actor and critic train at the same time, each worker on its data-parallel shard of the batch (the
        workers of a ring on the same one)."""
        actor, critic, ring = self.actor, self.critic, self.ring
        return Update(
            [] if actor_frozen else [actor.on(r, PolicyWorker.train, experience.shard(r, len(actor), ring), step)
                                     for r in range(len(actor))],
            [] if critic is None else [critic.on(r, CriticWorker.train, experience.shard(r, len(critic), ring), step)
                                       for r in range(len(critic))])

    def save_checkpoint(self, folder: Path) -> None:
        """Every trained role writes its engine state (model, optimizer, scheduler) under `folder`."""
        futures = self.actor.all(PolicyWorker.save_checkpoint, str(folder / "actor"))
        if self.critic is not None:
            futures += self.critic.all(CriticWorker.save_checkpoint, str(folder / "critic"))
        get(futures)

    def load_checkpoint(self, folder: Path) -> None:
        futures = self.actor.all(PolicyWorker.load_checkpoint, str(folder / "actor"))
        if self.critic is not None:
            futures += self.critic.all(CriticWorker.load_checkpoint, str(folder / "critic"))
        get(futures)

    def save_pretrained(self, save_path: str) -> None:
        """The policy (and critic, in `critic/`) as Hugging Face folders."""
        futures = self.actor.all(PolicyWorker.save_pretrained, save_path)
        if self.critic is not None:
            futures += self.critic.all(CriticWorker.save_pretrained, str(Path(save_path) / "critic"))
        get(futures)
