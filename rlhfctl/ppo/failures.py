"""What a PPO run does when something fails mid-run: a NaN/inf before or in an update, a reward or an agent's
environment that fails, a worker or node that is lost.

Each policy decides whether the state is worth a checkpoint (only when it is a whole step's end that nothing
broken has touched) and writes the one message the user reads: what failed, at which step, where to resume from.
The rollouts and the trainer call these; they do not decide it themselves.
"""

from __future__ import annotations

from typing import Callable, NoReturn, Optional

from rlhfctl.distributed.roles import WorkerLost
from rlhfctl.errors import NonFiniteError, RewardError, RlhfctlError
from rlhfctl.ppo.checkpoint import CheckpointManager, TrainerState
from rlhfctl.rollout.samples import Samples
from rlhfctl.ppo.nonfinite import Finding, NonFiniteUpdate
from rlhfctl.ppo.tracking import Tracker
from rlhfctl.rewards.contract import RewardFault


class NonFiniteBatch(Exception):
    """This step's batch holds a NaN/inf before training (`finding`, in `samples` where known); the trainer skips it
    or stops the run."""

    def __init__(self, finding: Finding, samples: Optional[Samples] = None) -> None:
        super().__init__(finding.describe())
        self.finding = finding
        self.samples = samples


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def sample_details(samples: Optional[Samples], index: Optional[int]) -> str:
    """'\nsample i: prompt ..., response ..., label ...' (empty when the sample is unknown)."""
    if samples is None or index is None or not 0 <= index < len(samples):
        return ""
    return (f"\nsample {index}: prompt {_short(samples.prompts[index])!r}, response "
            f"{_short(samples.responses[index])!r}, label {_short(samples.labels[index])!r}")


def _fault_details(exc: RewardError, samples: Optional[Samples]) -> str:
    """The failing sample (prompt, response, label) and the user's traceback, where the reward source knows them."""
    out = sample_details(samples, exc.index)
    trace = exc.user_traceback
    if trace:
        out += "\n" + trace.rstrip()
    return out


class Failures:
    """The run's failure policies. `save` writes a checkpoint of `state.step` (the last completed step) and
    returns its folder; `trained_roles` hold training state (a lost one takes its share of it along)."""

    def __init__(self, state: TrainerState, save: Callable[[], str], checkpoints: CheckpointManager,
                 tracker: Tracker, *, skip_nonfinite_batches: bool, trained_roles: set[str]) -> None:
        self.state = state
        self.save = save
        self.checkpoints = checkpoints
        self.tracker = tracker
        self.skip_nonfinite_batches = skip_nonfinite_batches
        self.trained_roles = trained_roles

    def newest_good(self) -> str:
        """Where to resume from instead: the newest checkpoint saved before this step (whose weights may already
        be the start of the divergence; nothing later was checked)."""
        latest = self.checkpoints.latest()
        return f"the newest checkpoint is {latest if latest is not None else 'none (see --save-steps)'}"

    # -------------------------------------------------------------------------------------------- NaN / inf
    def nonfinite_batch(self, finding: Finding, samples: Optional[Samples]) -> dict[str, float]:
        """A NaN/inf found before training: skip the batch (--skip-nonfinite-batches), or stop the run with a
        checkpoint of the last good step (no weight has changed in this step yet)."""
        step = self.state.step + 1
        if self.skip_nonfinite_batches:
            self.state.nonfinite_skipped += 1
            self.tracker.note(f"step {step}: {finding.describe()}; batch skipped, not trained on "
                              f"(--skip-nonfinite-batches){sample_details(samples, finding.index)}")
            return {"nonfinite_skipped": 1.0}
        lead = (f"step {step}: {finding.describe()}, so the run stops before training on it (a NaN or inf would "
                "corrupt the weights; --skip-nonfinite-batches skips such batches instead).")
        details = sample_details(samples, finding.index)
        if finding.from_trained_weights:  # the weights computed it: saving them would keep the fault
            raise NonFiniteError(f"{lead} The {finding.what.split()[0]}'s own weights produced it, so they are not "
                                 f"saved; {self.newest_good()}.{details}")
        folder = self.save()
        raise NonFiniteError(f"{lead} Checkpoint of step {self.state.step}, the last good step, saved in {folder}; "
                             f"resume with --load-checkpoint.{details}")

    def nonfinite_update(self, failures: list[NonFiniteUpdate], finished: list[str]) -> NoReturn:
        """A trained role's update went non-finite and was not applied: stop, saving a checkpoint only when that
        role had applied nothing of this step (then its weights are the last good step's)."""
        first = failures[0]
        applied = max(f.updates_applied for f in failures)
        lead = f"{first}. The run stops (--skip-nonfinite-batches skips such updates instead)."
        if applied == 0:
            folder = self.save()
            also = "".join(f" (the {r}'s updates of step {self.state.step + 1} had completed and are in it)"
                           for r in finished)
            raise NonFiniteError(f"{lead} Checkpoint of step {self.state.step}, the last good step, saved in "
                                 f"{folder}{also}; resume with --load-checkpoint.")
        raise NonFiniteError(
            f"{lead} The {first.role} had applied {applied} update(s) of step {self.state.step + 1} before it, which "
            f"may be what diverged (a learning rate too high?), so this state is not saved; {self.newest_good()}.")

    # -------------------------------------------------------------------------------------------- reward
    def reward_failed(self, exc: RewardError, samples: Optional[Samples], during: Optional[str] = None) -> NoReturn:
        """A NaN reward of a training batch is a non-finite batch (skipped or stopping the run, as one from a local
        model); any other failure stops the run after a checkpoint, never a reward of 0. `during` names what was
        scored (default: the step under way)."""
        if isinstance(exc, RewardFault) and exc.kind == "nan" and exc.index is not None and during is None:
            raise NonFiniteBatch(Finding("reward", exc.index, float("nan")), samples) from None
        raise self._stopped(during or f"step {self.state.step + 1}", exc, samples) from None

    def agent_failed(self, exc: RewardError, during: str) -> NoReturn:
        """An agent's episode failed (--agent-func-path): its environment is the reward, so the same policy."""
        raise self._stopped(during, exc, None, failed="an agent episode failed") from None

    def _stopped(self, what: str, exc: RewardError, samples: Optional[Samples],
                 failed: str = "the reward failed") -> RewardError:
        folder = self.save()
        return RewardError(f"{what}: {failed}, so the run stops (a failure is never a reward of 0). Checkpoint of "
                           f"step {self.state.step} saved in {folder}; resume with --load-checkpoint."
                           f"\n{exc}{_fault_details(exc, samples)}")

    # -------------------------------------------------------------------------------------------- lost worker
    def worker_lost(self, lost: WorkerLost) -> WorkerLost:
        """A worker (or its node) is gone mid-run: stop with a checkpoint of the last completed step when the trained
        roles are intact (a lost reference or reward model holds no training state); a lost trained worker took its
        share of the state and its peers' collectives with it, so then point to the newest saved checkpoint."""
        role = lost.place.role if lost.place is not None else None
        resume = "resume with --load-checkpoint on the remaining cluster (placement flags that fit it)"
        if role is not None and role not in self.trained_roles:
            try:
                folder = self.save()
            except RlhfctlError as again:
                return WorkerLost(f"{lost}; the run stops, and saving a checkpoint failed too ({again}); "
                                  f"{self.newest_good()}", lost.place, lost.node_died)
            return WorkerLost(f"{lost}; the run stops. Checkpoint of step {self.state.step}, the last completed step, "
                              f"saved in {folder}; {resume}.", lost.place, lost.node_died)
        return WorkerLost(f"{lost}; the run stops during step {self.state.step + 1}. The {role or 'lost'} worker's "
                          f"state went with it, so nothing of this step is saved; {self.newest_good()} "
                          f"(--save-steps sets how often one is saved); {resume}.", lost.place, lost.node_died)
