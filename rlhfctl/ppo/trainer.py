"""The PPO driver loop, one step at a time: generate -> score -> make experience -> train -> sync.

The driver holds no model. Its rollouts (ppo/rollouts.py: synchronous, dynamic filtering, or --async-train ahead
of time) hand it each step's samples and rewards; the reference log-probs and critic values are computed while
the reward is; KL and advantages come from ppo/functional.py; the actor and critic train at the same time; the
engines then get the new weights. What a failure does is ppo/failures.py's decision.

Ctrl-C: the rollout in flight is dropped, an update under way is finished (so a checkpoint is always a step's
end), then a checkpoint is saved and the run exits 130.
"""

from __future__ import annotations

import time
from typing import Optional

import torch

from rlhfctl.config.groups import RolloutArgs, RunArgs
from rlhfctl.config.train_groups import EvalArgs, LoggingArgs, PPOArgs, TrainArgs
from rlhfctl.data import PromptExample
from rlhfctl.distributed.roles import WorkerLost, get
from rlhfctl.errors import RlhfctlError
from rlhfctl.ppo import functional as F, moments
from rlhfctl.ppo.checkpoint import CheckpointManager, TrainerState
from rlhfctl.ppo.evaluation import Evaluation
from rlhfctl.ppo.experience import Experience, Samples
from rlhfctl.ppo.failures import Failures, NonFiniteBatch
from rlhfctl.ppo.nonfinite import NonFiniteUpdate, check_experience, check_rewards
from rlhfctl.ppo.profile import StepProfiler
from rlhfctl.ppo.roles import Forwards, Roles, Update, collect
from rlhfctl.ppo.rollouts import (FilteredRollouts, FilterOptions, PromptBatches, Rollouts, SamplesGenerator, Score,
                                  SyncRollouts)
from rlhfctl.ppo.scoring import Scorer, extra_log_means
from rlhfctl.ppo.shaping import build_experience
from rlhfctl.ppo.tracking import Tracker
from rlhfctl.rewards.base import RewardBatch, RewardSource
from rlhfctl.rollout.base import Rollout, logprob_diff


class Interrupted(RlhfctlError):
    """Ctrl-C: a checkpoint was saved; exit code 130 as for any interrupted command."""

    exit_code = 130


def steps_per_episode(num_prompts: int, rollout_batch_size: int) -> int:
    """Full rollout batches per pass over the prompts (a last partial batch is dropped, as OpenRLHF does)."""
    return num_prompts // rollout_batch_size


class PPOTrainer:
    def __init__(self, roles: Roles, backend: Rollout, reward: Optional[RewardSource], prompts: list[PromptExample],
                 eval_prompts: Optional[list[PromptExample]], tracker: Tracker, checkpoints: CheckpointManager,
                 pad_token_id: int, *, train: TrainArgs, ppo: PPOArgs, rollout: RolloutArgs, logging: LoggingArgs,
                 evaluation: EvalArgs, run: RunArgs, profiler: Optional[StepProfiler] = None) -> None:
        self.roles = roles
        self.backend = backend
        self.tracker = tracker
        self.checkpoints = checkpoints
        self.pad_token_id = pad_token_id
        self.train_args, self.ppo, self.rollout_args, self.logging = train, ppo, rollout, logging
        self.seed = run.seed
        self.state = TrainerState(kl_coef=ppo.init_kl_coef)
        self.kl_ctl: F.AdaptiveKLController | F.FixedKLController = (
            F.AdaptiveKLController(self.state.kl_coef, ppo.kl_target, ppo.kl_horizon) if ppo.kl_target is not None
            else F.FixedKLController(self.state.kl_coef))
        self.prompts = PromptBatches(prompts, rollout.rollout_batch_size, run.seed)
        self.total_steps = self.prompts.per_episode * train.num_episodes
        self.failures = Failures(self.state, self.save_checkpoint, checkpoints, tracker,
                                 skip_nonfinite_batches=train.skip_nonfinite_batches, trained_roles=roles.trained)
        self.scorer = Scorer(reward, self.failures, micro_rollout_batch_size=rollout.micro_rollout_batch_size,
                             n_samples_per_prompt=rollout.n_samples_per_prompt,
                             eval_n_samples_per_prompt=evaluation.eval_n_samples_per_prompt)
        self.generator = SamplesGenerator(backend, self.failures, n_samples_per_prompt=rollout.n_samples_per_prompt,
                                          eval_n_samples_per_prompt=evaluation.eval_n_samples_per_prompt)
        self.evaluation = Evaluation(eval_prompts or [], self.generator, self.scorer, evaluation, self.total_steps)
        self.rollouts: Rollouts = Rollouts()  # opened by fit() at the step it starts from
        self._update: Optional[Update] = None  # this step's update, from its start until the step is counted
        self.profiler = profiler  # --profile

    # ------------------------------------------------------------------------------------------------ loop
    def fit(self) -> dict[str, float]:
        last: dict[str, float] = {}
        try:
            if self.state.step == 0 and self.evaluation.due(0):
                self.tracker.log(0, self.evaluation.run(0))
            self.rollouts = self._open_rollouts()
            while self.state.step < self.total_steps:
                last = self.train_step(self.state.step)
                self._count_step()
                self.state.samples_seen += int(last["samples"])
                self.state.kl_coef = self.kl_ctl.value
                self._after_step(last)
            if self.state.nonfinite_skipped:
                self.tracker.note(f"{self.state.nonfinite_skipped} batch(es) with a NaN or inf were skipped "
                                  "(nonfinite_skipped in metrics.jsonl)")
        except KeyboardInterrupt:
            self.rollouts.stop()  # a rollout still being generated is dropped; resume generates it again
            if self._update is not None:  # let the update finish so the checkpoint is a step's end
                get(self._update.actor + self._update.critic)
                self._count_step()
            folder = self.save_checkpoint()
            raise Interrupted(f"interrupted after step {self.state.step}; checkpoint saved in {folder} "
                              "(resume with --load-checkpoint)") from None
        except WorkerLost as lost:
            raise self.failures.worker_lost(lost) from None
        finally:
            self.rollouts.stop()
        return last

    def _count_step(self) -> None:
        self.state.step += 1
        self.state.episode, self.state.batch_in_episode = divmod(self.state.step, self.prompts.per_episode)
        self._update = None

    def _after_step(self, metrics: dict[str, float]) -> None:
        """Evaluate, log and save as --eval-steps, --logging-steps and --save-steps ask."""
        step = self.state.step
        if self.evaluation.due(step):
            try:
                with self.rollouts.exclusive():  # --async-train: after the producer's rollout in flight
                    metrics.update(self.evaluation.run(step))
            finally:  # the step's own metrics are kept even when its evaluation fails
                self.tracker.log(step, metrics)
        elif step % self.logging.logging_steps == 0 or step == self.total_steps:
            self.tracker.log(step, metrics)
        if self.logging.save_steps > 0 and step % self.logging.save_steps == 0:
            self.save_checkpoint()

    def _open_rollouts(self) -> Rollouts:
        """Synchronous or dynamic filtering rollouts; with --async-train the same, run ahead by a producer."""
        ppo = self.ppo

        def rollouts(score: Score) -> Rollouts:
            if not ppo.dynamic_filtering:
                return SyncRollouts(self.prompts, self.generator, score)
            options = FilterOptions(self.rollout_args.n_samples_per_prompt, tuple(ppo.dynamic_filtering_reward_range),
                                    ppo.dynamic_filtering_max_rounds, len(self.roles.actor), self.seed,
                                    self.pad_token_id)
            return FilteredRollouts(self.prompts, self.generator, score, options, self.tracker)

        if not self.train_args.async_train:
            return rollouts(self.scorer.score)
        from rlhfctl.ppo.async_loop import AsyncRollouts

        return AsyncRollouts(rollouts, self.scorer, self.state.step, self.total_steps,
                             self.train_args.async_queue_size, self.train_args.partial_rollout,
                             self.generator.backend.abort)

    def train_step(self, step: int) -> dict[str, float]:
        """One PPO step: the rollouts' scored batch, its experience, the actor and critic updates, the weight sync."""
        if self.profiler is not None:
            self.profiler.start()
        t_start = t_ready = time.perf_counter()
        samples: Optional[Samples] = None
        timings: dict[str, float] = {}
        try:
            moments.reached(step + 1, "generate")
            batch = self.rollouts.next(step)  # generate (filtered and async rollouts score too)
            samples, timings = batch.samples, batch.timings
            t_ready = time.perf_counter()
            forwards = self.roles.forwards(samples)
            scored_now = batch.rewards is None
            rewards = batch.score()  # the synchronous mode scores while the models run their forwards
            experience, info = self.make_experience(samples, rewards, forwards)
            info.update(batch.metrics)
            timings["time/make_experience"] = time.perf_counter() - t_ready - (
                timings["time/reward"] if scored_now else 0.0)
        except NonFiniteBatch as bad:
            skipped = self.failures.nonfinite_batch(bad.finding, bad.samples or samples)
            timings.update(self.rollouts.updated(step, t_ready, None))  # nothing trained: the weights stand
            return {**timings, **skipped, "time/step": time.perf_counter() - t_start,
                    "samples": float(len(samples or ())), "kl_coef": self.kl_ctl.value}

        t0 = time.perf_counter()
        train_metrics = self.train(experience, step)
        timings["time/train"] = time.perf_counter() - t0
        sync = None if "actor_frozen" in train_metrics else self.backend.sync_weights
        moments.reached(step + 1, "sync")
        timings.update(self.rollouts.updated(step, t_ready, sync))

        if "kl" not in info:  # no experience forward of the actor: its training forward's KL to the reference
            info["kl"] = train_metrics.get("actor_kl", 0.0)
        self.kl_ctl.update(info["kl"], len(samples))
        elapsed = time.perf_counter() - t_start
        metrics = {**info, **train_metrics, **timings, "time/step": elapsed, "samples": float(len(samples)),
                   "samples_per_s": len(samples) / elapsed, "kl_coef": self.kl_ctl.value}
        if self.train_args.skip_nonfinite_batches:
            skipped = sum(metrics.pop(f"{role}_nonfinite_skipped", 0.0) for role in ("actor", "critic"))
            metrics["nonfinite_skipped"] = skipped
            self.state.nonfinite_skipped += int(skipped)
        if self.profiler is not None:
            metrics.update(self.profiler.finish(timings))
        return metrics

    def make_experience(self, samples: Samples, rewards: RewardBatch, forwards: Forwards
                        ) -> tuple[Experience, dict[str, float]]:
        raw = torch.tensor(rewards.rewards, dtype=torch.float32)
        finding = check_rewards(raw)  # before shaping and clipping, which would turn an inf into a plausible reward
        if finding is not None:
            raise NonFiniteBatch(finding)
        log_probs = torch.cat(get(forwards.log_probs)) if forwards.log_probs else None
        ref_log_probs = torch.cat(get(forwards.ref_log_probs)) if forwards.ref_log_probs else None
        values = torch.cat(get(forwards.values)) if forwards.values else None
        get(forwards.followers)
        experience, info = build_experience(self.ppo, self.rollout_args, samples, raw, log_probs, ref_log_probs,
                                            values, self.kl_ctl.value)
        info.update(extra_log_means(rewards, "reward/"))
        if samples.rollout_log_probs is not None:
            info.update(logprob_diff(samples.rollout_log_probs, log_probs, samples.action_mask))
        finding = check_experience(experience)
        if finding is not None:
            raise NonFiniteBatch(finding)
        return experience, info

    def train(self, experience: Experience, step: int) -> dict[str, float]:
        """Actor and critic train at the same time; their mean statistics. A non-finite update stops the run."""
        # OpenRLHF trains the actor once global_steps (1-based) > --freezing-actor-steps.
        frozen = step + 1 <= self.train_args.freezing_actor_steps
        # With a frozen actor the critic alone trains, and its update must not land in the previous step's save.
        self._update = self.roles.train(experience, step, actor_frozen=frozen)
        moments.reached(step + 1, "train")
        actor_stats = collect(self._update.actor)
        critic_stats = collect(self._update.critic)
        failures = [r for r in actor_stats + critic_stats if isinstance(r, NonFiniteUpdate)]
        if failures:
            finished = [role for role, stats in (("actor", actor_stats), ("critic", critic_stats))
                        if stats and not any(isinstance(r, NonFiniteUpdate) for r in stats)]
            self.failures.nonfinite_update(failures, finished)
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
        moments.reached(self.state.step, "save")
        self.roles.save_checkpoint(folder)
        self.state.kl_coef = self.kl_ctl.value
        final = self.checkpoints.finish(folder, self.state)
        self.tracker.note(f"checkpoint of step {self.state.step} saved in {final}")
        return str(final)

    def load_checkpoint(self, folder: str) -> None:
        from pathlib import Path

        self.roles.load_checkpoint(Path(folder))
        loaded = TrainerState.from_file(Path(folder) / "trainer_state.json")
        for name, value in vars(loaded).items():  # the failure policies hold this same state object
            setattr(self.state, name, value)
        self.kl_ctl.value = self.state.kl_coef
        self.backend.sync_weights()  # the engines still hold the initial weights

    def save_pretrained(self, save_path: str) -> None:
        self.roles.save_pretrained(save_path)
