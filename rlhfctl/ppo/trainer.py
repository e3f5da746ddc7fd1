"""The PPO driver loop: prompts -> samples -> rewards -> experience -> PPO epochs -> metrics, one step at a time.

The driver holds no model. It sends prompts to the actor workers, scores the queries (a reward server, a
reward_func.py, or the reward-model role), gathers reference log-probs and critic values while the reward is being
computed, computes KL and advantages with ppo/functional.py, and has the actor and critic train at the same time.
Every phase is timed, and a failure of the reward stops the run after a checkpoint, naming the step.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any, NoReturn, Optional, TYPE_CHECKING

import torch

from rlhfctl.data import PromptExample
from rlhfctl.distributed.roles import RoleGroup, WorkerLost, get
from rlhfctl.errors import NonFiniteError, RewardError, RlhfctlError
from rlhfctl.ppo import functional as F
from rlhfctl.ppo.checkpoint import CheckpointManager, TrainerState
from rlhfctl.ppo import dynamic_sampling, moments
from rlhfctl.ppo.experience import Experience, Samples
from rlhfctl.ppo.nonfinite import Finding, NonFiniteUpdate, check_experience, check_rewards
from rlhfctl.ppo.shaping import build_experience
from rlhfctl.rewards.base import RewardBatch, RewardSource
from rlhfctl.rewards.contract import RewardFault
from rlhfctl.rollout.base import Rollout, logprob_diff
from rlhfctl.rollout.hf import HFRollout
from rlhfctl.shards import contiguous_shards

if TYPE_CHECKING:
    from rlhfctl.config import TrainPPOConfig


class Interrupted(RlhfctlError):
    """Ctrl-C: a checkpoint was saved; exit code 130 as for any interrupted command."""

    exit_code = 130


@dataclass
class Roles:
    actor: RoleGroup
    ref: Optional[RoleGroup] = None
    critic: Optional[RoleGroup] = None
    reward: Optional[RoleGroup] = None


def steps_per_episode(num_prompts: int, rollout_batch_size: int) -> int:
    """Full rollout batches per pass over the prompts (a last partial batch is dropped, as OpenRLHF does)."""
    return num_prompts // rollout_batch_size


def _forward(group: RoleGroup, method: str, samples: Samples) -> list[Any]:
    """Start `method` on each worker of `group` with its contiguous rows of `samples`."""
    A = samples.action_mask.shape[1]
    shards = [(samples.sequences[s], samples.attention_mask[s]) for s in contiguous_shards(len(samples), len(group))]
    return [w.call.remote(method, seqs, mask, A) for w, (seqs, mask) in zip(group.workers, shards)]


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _sample_details(samples: Optional[Samples], index: Optional[int]) -> str:
    """'\nsample i: prompt ..., response ..., label ...' (empty when the sample is unknown)."""
    if samples is None or index is None or not 0 <= index < len(samples):
        return ""
    return (f"\nsample {index}: prompt {_short(samples.prompts[index])!r}, response "
            f"{_short(samples.responses[index])!r}, label {_short(samples.labels[index])!r}")


class _NonFiniteBatch(Exception):
    """Internal: this step's batch holds a NaN/inf before training (`finding`); the step stops or skips it."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.describe())
        self.finding = finding


def _collect(futures: list[Any]) -> list[Any]:
    """Each future's result, or the NonFiniteUpdate it raised (every worker is waited for, so none is still
    training when the driver decides what to save)."""
    out: list[Any] = []
    for future in futures:
        try:
            out.append(get(future))
        except NonFiniteUpdate as exc:
            out.append(exc)
    return out


def _fault_details(exc: RewardError, samples: Optional[Samples]) -> str:
    """The failing sample (prompt, response, label) and the user's traceback, where the reward source knows them."""
    out = _sample_details(samples, getattr(exc, "index", None))
    trace = getattr(exc, "user_traceback", "")
    if trace:
        out += "\n" + trace.rstrip()
    return out


def _extra_log_means(rewards: RewardBatch, prefix: str) -> dict[str, float]:
    """The mean of each finite `extra_logs` entry of the reward, keyed `prefix + name`."""
    out = {}
    for name, vals in rewards.extra_logs.items():
        finite = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
        if finite:  # an agent's episode statistics (agent/turns, ...) keep their own name in training
            out[name if name.startswith("agent/") and prefix == "reward/" else prefix + name] = \
                sum(finite) / len(finite)
    return out


class PPOTrainer:
    def __init__(self, cfg: TrainPPOConfig, prompts: list[PromptExample], roles: Roles, reward: Optional[RewardSource],
                 tracker: Any, checkpoints: CheckpointManager, pad_token_id: int,
                 state: Optional[TrainerState] = None, eval_prompts: Optional[list[PromptExample]] = None,
                 rollout: Optional[Rollout] = None) -> None:
        self.cfg = cfg
        self.rollout: Rollout = rollout or HFRollout(roles.actor, pad_token_id)
        self.prompts = prompts
        self.eval_prompts = eval_prompts or []
        self.roles = roles
        self.reward = reward
        self.tracker = tracker
        self.checkpoints = checkpoints
        self.pad_token_id = pad_token_id
        self.state = state or TrainerState(kl_coef=cfg.init_kl_coef)
        if cfg.kl_target is not None:
            self.kl_ctl: Any = F.AdaptiveKLController(self.state.kl_coef, cfg.kl_target, cfg.kl_horizon)
        else:
            self.kl_ctl = F.FixedKLController(self.state.kl_coef)
        self.per_episode = steps_per_episode(len(prompts), cfg.rollout_batch_size)
        self.total_steps = self.per_episode * cfg.num_episodes
        self._phase = "idle"
        self._train_futures: list[Any] = []
        self.producer: Any = None  # --async-train: ppo/async_loop.AsyncRollouts while fit() runs

    # ------------------------------------------------------------------------------------------------ data
    def _batch(self, episode: int, index: int) -> list[PromptExample]:
        order = list(range(len(self.prompts)))
        random.Random(self.cfg.seed * 1009 + episode).shuffle(order)
        size = self.cfg.rollout_batch_size
        return [self.prompts[i] for i in order[index * size:(index + 1) * size]]

    # ------------------------------------------------------------------------------------------------ loop
    def fit(self) -> dict[str, float]:
        last: dict[str, float] = {}
        try:
            if self.eval_prompts and self.state.step == 0:
                self.tracker.log(0, self.evaluate())
            if self.cfg.async_train:  # rollouts generated ahead by a producer thread (ppo/async_loop.py)
                from rlhfctl.ppo.async_loop import AsyncRollouts

                self.producer = AsyncRollouts(self, self.state.step, self.total_steps, self.cfg.async_queue_size)
            while self.state.step < self.total_steps:
                episode, index = divmod(self.state.step, self.per_episode)
                batch = self._batch(episode, index)
                last = self.train_step(batch, self.producer.next(self.state.step) if self.producer else None)
                self.state.step += 1
                self.state.episode, self.state.batch_in_episode = divmod(self.state.step, self.per_episode)
                self.state.samples_seen += int(last["samples"])
                self.state.kl_coef = self.kl_ctl.value
                if self._eval_due(self.state.step):
                    try:
                        with self._engines_alone():
                            last.update(self.evaluate())
                    finally:  # the step's own metrics are kept even when its evaluation fails
                        self.tracker.log(self.state.step, last)
                elif self.state.step % self.cfg.logging_steps == 0 or self.state.step == self.total_steps:
                    self.tracker.log(self.state.step, last)
                if self.cfg.save_steps > 0 and self.state.step % self.cfg.save_steps == 0:
                    self.save_checkpoint()
            if self.state.nonfinite_skipped:
                self.tracker.note(f"{self.state.nonfinite_skipped} batch(es) with a NaN or inf were skipped "
                                  "(nonfinite_skipped in metrics.jsonl)")
        except KeyboardInterrupt:
            if self.producer is not None:  # a rollout still being generated is dropped; resume generates it again
                self.producer.stop()
            if (self._phase == "train" and self._train_futures) or self._phase == "sync":
                get(self._train_futures)  # the update is under way: let it finish so the checkpoint is a step end
                self.state.step += 1
                self.state.episode, self.state.batch_in_episode = divmod(self.state.step, self.per_episode)
            folder = self.save_checkpoint()
            raise Interrupted(f"interrupted after step {self.state.step}; checkpoint saved in {folder} "
                              "(resume with --load-checkpoint)") from None
        except WorkerLost as lost:
            raise self._worker_lost(lost) from None
        finally:
            if self.producer is not None:
                self.producer.stop()
        return last

    def _worker_lost(self, lost: WorkerLost) -> WorkerLost:
        """A worker (or its node) is gone mid-run: stop with a checkpoint of the last completed step when the trained
        roles are intact (a lost reference or reward model holds no training state); a lost trained worker took its
        share of the state and its peers' collectives with it, so then point to the newest saved checkpoint."""
        trained = {"actor"} | ({"critic"} if self.roles.critic is not None else set())
        role = lost.place.role if lost.place is not None else None
        resume = "resume with --load-checkpoint on the remaining cluster (placement flags that fit it)"
        if role is not None and role not in trained:
            try:
                folder = self.save_checkpoint()
            except RlhfctlError as again:
                return WorkerLost(f"{lost}; the run stops, and saving a checkpoint failed too ({again}); "
                                  f"{self._newest_good()}", lost.place, lost.node_died)
            return WorkerLost(f"{lost}; the run stops. Checkpoint of step {self.state.step}, the last completed step, "
                              f"saved in {folder}; {resume}.", lost.place, lost.node_died)
        return WorkerLost(f"{lost}; the run stops during step {self.state.step + 1}. The {role or 'lost'} worker's "
                          f"state went with it, so nothing of this step is saved; {self._newest_good()} "
                          f"(--save-steps sets how often one is saved); {resume}.", lost.place, lost.node_died)

    def _engines_alone(self) -> Any:
        """With --async-train, evaluation waits for the producer's rollout in flight and holds it off meanwhile."""
        import contextlib

        return self.producer.exclusive() if self.producer is not None else contextlib.nullcontext()

    def train_step(self, batch: list[PromptExample], ready: Any = None) -> dict[str, float]:
        """One PPO step on `batch`; with --async-train `ready` is its rollout, generated and scored ahead
        (ppo/async_loop.Ready)."""
        timings: dict[str, float] = {}
        t_start = t_ready = time.perf_counter()
        self._phase = "generate"
        moments.reached(self.state.step + 1, "generate")
        filtered: dict[str, float] = {}
        samples: Optional[Samples] = None
        try:
            if ready is not None:
                t_start -= ready.timings["time/rollout_wait"]  # the step's time includes waiting for its rollout
                samples = ready.samples
                rewards = ready.result(self)  # the producer's reward failure stops the run here, as synchronous
                filtered, timings = dict(ready.metrics), dict(ready.timings)
            elif self.cfg.dynamic_filtering:  # scores decide which groups stay, so scoring comes before the forwards
                samples, rewards, filtered, timings["time/reward"] = self.filtered_rollout(batch)
            else:
                samples = self.generate(batch)
            if ready is None:
                timings["time/generate"] = time.perf_counter() - t_start - timings.get("time/reward", 0.0)

            self._phase = "make_experience"
            t0 = time.perf_counter()
            log_probs_f = _forward(self.roles.actor, "log_probs", samples)
            ref_f = _forward(self.roles.ref, "log_probs", samples) if self.roles.ref else []
            values_f = _forward(self.roles.critic, "values", samples) if self.roles.critic else []
            scored_here = ready is None and not self.cfg.dynamic_filtering
            if scored_here:  # scored while the models run their forwards
                t1 = time.perf_counter()
                rewards = self.score(samples)
                timings["time/reward"] = time.perf_counter() - t1
            experience, info = self.make_experience(samples, rewards, log_probs_f, ref_f, values_f)
            info.update(filtered)
            timings["time/make_experience"] = time.perf_counter() - t0 - (timings["time/reward"] if scored_here
                                                                          else 0.0)
            finding = check_experience(experience)
            if finding is not None:
                raise _NonFiniteBatch(finding)
        except _NonFiniteBatch as bad:
            self._phase = "idle"
            skipped = self._nonfinite_batch(bad.finding, samples)
            if self.producer is not None:  # nothing trained, the weights stand: the producer may go on
                timings.update(self.producer.updated(self.state.step, t_ready, None))
            elapsed = time.perf_counter() - t_start
            return {**timings, **skipped, "time/step": elapsed, "samples": float(len(samples or ())),
                    "kl_coef": self.kl_ctl.value}

        self._phase = "train"
        t0 = time.perf_counter()
        train_metrics = self.train(experience)
        timings["time/train"] = time.perf_counter() - t0
        self._phase = "sync"  # the update is applied: an interrupt from here on saves this step's end
        moments.reached(self.state.step + 1, "sync")
        sync = None if "actor_frozen" in train_metrics else self.rollout.sync_weights
        if self.producer is not None:  # after the rollout in flight; samples generated later carry this version
            timings.update(self.producer.updated(self.state.step, t_ready, sync))
        elif sync is not None:  # the engines generate the next step with the updated policy
            sync_seconds = sync()
            if sync_seconds is not None:
                timings["time/weight_sync"] = sync_seconds
        self._phase = "idle"

        self.kl_ctl.update(info["kl"], len(samples))
        elapsed = time.perf_counter() - t_start
        metrics = {**info, **train_metrics, **timings, "time/step": elapsed, "samples": float(len(samples)),
                   "samples_per_s": len(samples) / elapsed, "kl_coef": self.kl_ctl.value}
        if self.cfg.skip_nonfinite_batches:
            skipped = sum(metrics.pop(f"{role}_nonfinite_skipped", 0.0) for role in ("actor", "critic"))
            metrics["nonfinite_skipped"] = skipped
            self.state.nonfinite_skipped += int(skipped)
        return metrics

    # ------------------------------------------------------------------------------------------------ NaN / inf
    def _nonfinite_batch(self, finding: Finding, samples: Optional[Samples]) -> dict[str, float]:
        """A NaN/inf found before training: skip the batch (--skip-nonfinite-batches), or stop the run with a
        checkpoint of the last good step (no weight has changed in this step yet)."""
        step = self.state.step + 1
        if self.cfg.skip_nonfinite_batches:
            self.state.nonfinite_skipped += 1
            self.tracker.note(f"step {step}: {finding.describe()}; batch skipped, not trained on "
                              f"(--skip-nonfinite-batches){_sample_details(samples, finding.index)}")
            return {"nonfinite_skipped": 1.0}
        lead = (f"step {step}: {finding.describe()}, so the run stops before training on it (a NaN or inf would "
                "corrupt the weights; --skip-nonfinite-batches skips such batches instead).")
        details = _sample_details(samples, finding.index)
        if finding.from_trained_weights:  # the weights computed it: saving them would keep the fault
            raise NonFiniteError(f"{lead} The {finding.what.split()[0]}'s own weights produced it, so they are not "
                                 f"saved; {self._newest_good()}.{details}")
        folder = self.save_checkpoint()
        raise NonFiniteError(f"{lead} Checkpoint of step {self.state.step}, the last good step, saved in {folder}; "
                             f"resume with --load-checkpoint.{details}")

    def _newest_good(self) -> str:
        """Where to resume from instead: the newest checkpoint saved before this step (whose weights may already
        be the start of the divergence; nothing later was checked)."""
        latest = self.checkpoints.latest()
        return f"the newest checkpoint is {latest if latest is not None else 'none (see --save-steps)'}"

    def _nonfinite_update(self, failures: list[NonFiniteUpdate], finished: list[str]) -> None:
        """A trained role's update went non-finite and was not applied: stop, saving a checkpoint only when that
        role had applied nothing of this step (then its weights are the last good step's)."""
        first = failures[0]
        applied = max(f.updates_applied for f in failures)
        lead = f"{first}. The run stops (--skip-nonfinite-batches skips such updates instead)."
        if applied == 0:
            folder = self.save_checkpoint()
            also = "".join(f" (the {r}'s updates of step {self.state.step + 1} had completed and are in it)"
                           for r in finished)
            raise NonFiniteError(f"{lead} Checkpoint of step {self.state.step}, the last good step, saved in "
                                 f"{folder}{also}; resume with --load-checkpoint.")
        raise NonFiniteError(
            f"{lead} The {first.role} had applied {applied} update(s) of step {self.state.step + 1} before it, which "
            f"may be what diverged (a learning rate too high?), so this state is not saved; {self._newest_good()}.")

    # ------------------------------------------------------------------------------------------------ evaluation
    def _eval_due(self, step: int) -> bool:
        every = self.cfg.eval_steps
        return bool(self.eval_prompts) and (step == self.total_steps or (every > 0 and step % every == 0))

    def evaluate(self) -> dict[str, float]:
        """The policy as it is now on --eval-dataset: mean reward, pass@N and the reward's extra_logs, as eval/*."""
        t0 = time.perf_counter()
        self._phase = "evaluate"
        n = self.cfg.eval_n_samples_per_prompt
        samples = self.generate(self.eval_prompts, n, evaluation=True)
        rewards = self.score(samples, during=f"the evaluation after step {self.state.step}")
        self._phase = "idle"
        per_prompt = torch.tensor(rewards.rewards, dtype=torch.float32).view(-1, n)
        metrics = {"eval/reward": float(per_prompt.mean()),
                   f"eval/pass@{n}": float(per_prompt.max(dim=1).values.mean()),
                   "eval/response_length": float(samples.action_mask.sum(dim=1).float().mean()),
                   **_extra_log_means(rewards, "eval/")}
        metrics["time/evaluate"] = time.perf_counter() - t0
        return metrics

    # ------------------------------------------------------------------------------------------------ phases
    def generate(self, batch: list[PromptExample], n: Optional[int] = None, evaluation: bool = False,
                 round: int = 0, step: Optional[int] = None) -> Samples:
        """n samples per prompt from the rollout backend (HF generate on the actor workers, or vLLM engines).

        `round` > 0: a dynamic-filtering resample within the step, drawn from a seed of its own; `step`: the step
        the samples are for (default: the one under way; --async-train generates ahead)."""
        n = n or self.cfg.n_samples_per_prompt
        step = self.state.step if step is None else step
        try:
            return self.rollout.generate(batch, n, step, evaluation, round)
        except RewardError as exc:  # an agent's episode failed (--agent-func-path): its environment is the reward
            what = f"the evaluation after step {step}" if evaluation else f"step {step + 1}"
            raise self._reward_failed(what, exc, None, failed="an agent episode failed") from None

    def filtered_rollout(self, batch: list[PromptExample], step: Optional[int] = None,
                         score: Optional[Any] = None) -> tuple[Samples, RewardBatch, dict[str, float], float]:
        """--dynamic-filtering (ppo/dynamic_sampling.py): the step's samples and rewards, its counts, scoring time.

        `step` and `score` as --async-train's producer needs them: a step ahead, a scorer that only raises."""
        cfg = self.cfg
        step = self.state.step if step is None else step
        out = dynamic_sampling.filtered_rollout(
            batch, self.prompts, lambda prompts, r: self.generate(prompts, round=r, step=step), score or self.score,
            n_samples_per_prompt=cfg.n_samples_per_prompt, reward_range=tuple(cfg.dynamic_filtering_reward_range),
            max_rounds=cfg.dynamic_filtering_max_rounds, world_size=len(self.roles.actor),
            rng=random.Random(cfg.seed * 7919 + step), pad_token_id=self.pad_token_id)
        if out.metrics["dynamic_filtering/padded_groups"]:
            self.tracker.note(f"step {step + 1}: --dynamic-filtering kept {out.kept_groups} of "
                              f"{len(batch)} groups after {out.metrics['dynamic_filtering/extra_rounds']:.0f} extra "
                              "rounds; dropped groups fill the rest of the batch")
        return out.samples, out.rewards, out.metrics, out.score_seconds

    def score(self, samples: Samples, during: Optional[str] = None) -> RewardBatch:
        """Rewards for prompt + response; a failure stops the run after a checkpoint, never a reward of 0.

        `during` names what was being scored in the message (default: the step under way)."""
        try:
            batch = self.reward_call(samples, during)
        except RewardError as exc:
            self.reward_failed(exc, samples, during)
        return self.reward_count_checked(batch, samples)

    def reward_call(self, samples: Samples, during: Optional[str] = None) -> RewardBatch:
        """The reward source's answer for prompt + response; a RewardError as it was raised (score() handles it)."""
        queries = samples.queries  # prompt + response decoded as one sequence by the worker that generated them
        if len(queries) != len(samples):
            raise RlhfctlError(f"internal: {len(queries)} reward queries for {len(samples)} samples")
        if samples.environment is not None:  # --agent-func-path: the environment rewarded each episode
            return samples.environment
        assert self.reward is not None  # a server, a reward_func.py, the reward-model role (RoleReward), ...
        n_per_prompt = self.cfg.eval_n_samples_per_prompt if during else self.cfg.n_samples_per_prompt
        # a reward_func.py is called per micro-rollout batch of whole groups, as OpenRLHF calls it
        return self.reward.score_chunks(queries, samples.prompts, samples.labels,
                                        self.cfg.micro_rollout_batch_size * n_per_prompt)

    def reward_count_checked(self, batch: RewardBatch, samples: Samples) -> RewardBatch:
        if len(batch.rewards) != len(samples):
            raise RewardError(f"step {self.state.step + 1}: {len(batch.rewards)} rewards for {len(samples)} queries")
        return batch

    def reward_failed(self, exc: RewardError, samples: Optional[Samples], during: Optional[str] = None) -> NoReturn:
        """A NaN reward goes to _nonfinite_batch; any other failure stops the run after a checkpoint."""
        if isinstance(exc, RewardFault) and exc.kind == "nan" and exc.index is not None and during is None:
            # a NaN/inf from a reward_func or a server, as one from a local model: stop or skip (_nonfinite_batch)
            raise _NonFiniteBatch(Finding("reward", exc.index, float("nan"))) from None
        raise self._reward_failed(during or f"step {self.state.step + 1}", exc, samples) from None

    def _reward_failed(self, what: str, exc: RewardError, samples: Optional[Samples],
                       failed: str = "the reward failed") -> RewardError:
        """The error that stops the run after a checkpoint of the last complete step (never a reward of 0)."""
        folder = self.save_checkpoint()
        return RewardError(f"{what}: {failed}, so the run stops (a failure is never a reward of 0). Checkpoint of "
                           f"step {self.state.step} saved in {folder}; resume with --load-checkpoint."
                           f"\n{exc}{_fault_details(exc, samples)}")

    def make_experience(self, samples: Samples, rewards: RewardBatch, log_probs_f: list[Any], ref_f: list[Any],
                        values_f: list[Any]) -> tuple[Experience, dict[str, float]]:
        raw = torch.tensor(rewards.rewards, dtype=torch.float32)
        finding = check_rewards(raw)  # before shaping and clipping, which would turn an inf into a plausible reward
        if finding is not None:
            raise _NonFiniteBatch(finding)
        log_probs = torch.cat(get(log_probs_f))
        ref_log_probs = torch.cat(get(ref_f)) if ref_f else None
        values = torch.cat(get(values_f)) if values_f else None
        experience, info = build_experience(self.cfg, samples, raw, log_probs, ref_log_probs, values,
                                            self.kl_ctl.value)
        info.update(_extra_log_means(rewards, "reward/"))
        if samples.rollout_log_probs is not None:
            info.update(logprob_diff(samples.rollout_log_probs, log_probs, samples.action_mask))
        return experience, info

    def train(self, experience: Experience) -> dict[str, float]:
        """Actor and critic train at the same time, each on its data-parallel shards of the batch."""
        step = self.state.step
        actor = self.roles.actor
        # OpenRLHF trains the actor once global_steps (1-based) > --freezing-actor-steps.
        frozen = step + 1 <= self.cfg.freezing_actor_steps
        actor_futures = [] if frozen else [w.call.remote("train", experience.shard(r, len(actor)), step)
                                           for r, w in enumerate(actor.workers)]
        critic_futures = []
        if self.roles.critic is not None:
            critic = self.roles.critic
            critic_futures = [w.call.remote("train", experience.shard(r, len(critic)), step)
                              for r, w in enumerate(critic.workers)]
        # Every role's update of this step: Ctrl-C waits for all of them, so a checkpoint is a whole step's end
        # (with a frozen actor the critic alone trains, and its update must not land in the previous step's save).
        self._train_futures = actor_futures + critic_futures
        moments.reached(step + 1, "train")  # the update is under way
        actor_stats = _collect(actor_futures)
        critic_stats = _collect(critic_futures)
        self._train_futures = []
        failures = [r for r in actor_stats + critic_stats if isinstance(r, NonFiniteUpdate)]
        if failures:
            finished = [role for role, stats in (("actor", actor_stats), ("critic", critic_stats))
                        if stats and not any(isinstance(r, NonFiniteUpdate) for r in stats)]
            self._nonfinite_update(failures, finished)
        metrics = {}
        for prefix, stats in (("actor", actor_stats), ("critic", critic_stats)):
            for key in {k for s in stats for k in s}:
                mean = sum(s[key] for s in stats if key in s) / max(1, sum(1 for s in stats if key in s))
                name = key if key in ("policy_loss", "clip_ratio", "value_loss") else f"{prefix}_{key}"
                metrics[name] = mean
        if frozen:
            metrics["actor_frozen"] = 1.0
        return metrics

    # ------------------------------------------------------------------------------------------------ saving
    def save_checkpoint(self) -> str:
        """Every trained role writes its engine state; trainer_state.json last marks the folder complete."""
        folder = self.checkpoints.begin(self.state.step)
        futures = self.roles.actor.call_all("save_checkpoint", str(folder / "actor"))
        if self.roles.critic is not None:
            futures += self.roles.critic.call_all("save_checkpoint", str(folder / "critic"))
        moments.reached(self.state.step, "save")  # the roles are writing
        get(futures)
        self.state.kl_coef = self.kl_ctl.value
        final = self.checkpoints.finish(folder, self.state)
        self.tracker.note(f"checkpoint of step {self.state.step} saved in {final}")
        return str(final)

    def load_checkpoint(self, folder: str) -> None:
        from pathlib import Path

        futures = self.roles.actor.call_all("load_checkpoint", str(Path(folder) / "actor"))
        if self.roles.critic is not None:
            futures += self.roles.critic.call_all("load_checkpoint", str(Path(folder) / "critic"))
        get(futures)
        self.state = TrainerState.from_file(Path(folder) / "trainer_state.json")
        self.kl_ctl.value = self.state.kl_coef
        self.rollout.sync_weights()  # the engines still hold the initial weights

    def save_pretrained(self, save_path: str) -> None:
        from pathlib import Path

        futures = self.roles.actor.call_all("save_pretrained", save_path)
        if self.roles.critic is not None:
            futures += self.roles.critic.call_all("save_pretrained", str(Path(save_path) / "critic"))
        get(futures)
