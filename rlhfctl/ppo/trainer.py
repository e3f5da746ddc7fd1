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
from typing import Any, Optional

import torch

from rlhfctl.data import PromptExample, build_query
from rlhfctl.distributed.roles import RoleGroup, get
from rlhfctl.errors import RewardError, RlhfctlError
from rlhfctl.ppo import functional as F
from rlhfctl.ppo.checkpoint import CheckpointManager, TrainerState
from rlhfctl.ppo.experience import Experience, Samples
from rlhfctl.rewards.base import RewardBatch, RewardSource


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


def _split(n: int, parts: int) -> list[slice]:
    bounds = [n * r // parts for r in range(parts + 1)]
    return [slice(bounds[r], bounds[r + 1]) for r in range(parts)]


def _forward(group: RoleGroup, method: str, samples: Samples) -> list[Any]:
    """Start `method` on each worker of `group` with its contiguous rows of `samples`."""
    A = samples.action_mask.shape[1]
    shards = [(samples.sequences[s], samples.attention_mask[s]) for s in _split(len(samples), len(group))]
    return [w.call.remote(method, seqs, mask, A) for w, (seqs, mask) in zip(group.workers, shards)]


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _fault_details(exc: RewardError, samples: Samples) -> str:
    """The failing sample (prompt, response, label) and the user's traceback, where the reward source knows them."""
    out = ""
    index = getattr(exc, "index", None)
    if index is not None and 0 <= index < len(samples):
        out += (f"\nsample {index}: prompt {_short(samples.prompts[index])!r}, response "
                f"{_short(samples.responses[index])!r}, label {_short(samples.labels[index])!r}")
    trace = getattr(exc, "user_traceback", "")
    if trace:
        out += "\n" + trace.rstrip()
    return out


def _extra_log_means(rewards: RewardBatch, prefix: str) -> dict[str, float]:
    """The mean of each finite `extra_logs` entry of the reward, keyed `prefix + name`."""
    out = {}
    for name, vals in rewards.extra_logs.items():
        finite = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
        if finite:
            out[prefix + name] = sum(finite) / len(finite)
    return out


class PPOTrainer:
    def __init__(self, cfg: Any, prompts: list[PromptExample], roles: Roles, reward: Optional[RewardSource],
                 tracker: Any, checkpoints: CheckpointManager, pad_token_id: int,
                 state: Optional[TrainerState] = None, eval_prompts: Optional[list[PromptExample]] = None) -> None:
        self.cfg = cfg
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
            while self.state.step < self.total_steps:
                episode, index = divmod(self.state.step, self.per_episode)
                batch = self._batch(episode, index)
                last = self.train_step(batch)
                self.state.step += 1
                self.state.episode, self.state.batch_in_episode = divmod(self.state.step, self.per_episode)
                self.state.samples_seen += int(last["samples"])
                self.state.kl_coef = self.kl_ctl.value
                if self._eval_due(self.state.step):
                    try:
                        last.update(self.evaluate())
                    finally:  # the step's own metrics are kept even when its evaluation fails
                        self.tracker.log(self.state.step, last)
                elif self.state.step % self.cfg.logging_steps == 0 or self.state.step == self.total_steps:
                    self.tracker.log(self.state.step, last)
                if self.cfg.save_steps > 0 and self.state.step % self.cfg.save_steps == 0:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            if self._phase == "train" and self._train_futures:
                get(self._train_futures)  # the update is under way: let it finish so the checkpoint is a step end
                self.state.step += 1
                self.state.episode, self.state.batch_in_episode = divmod(self.state.step, self.per_episode)
            folder = self.save_checkpoint()
            raise Interrupted(f"interrupted after step {self.state.step}; checkpoint saved in {folder} "
                              "(resume with --load-checkpoint)") from None
        return last

    def train_step(self, batch: list[PromptExample]) -> dict[str, float]:
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        self._phase = "generate"
        samples = self.generate(batch)
        timings["time/generate"] = time.perf_counter() - t_start

        self._phase = "make_experience"
        t0 = time.perf_counter()
        log_probs_f = _forward(self.roles.actor, "log_probs", samples)
        ref_f = _forward(self.roles.ref, "log_probs", samples) if self.roles.ref else []
        values_f = _forward(self.roles.critic, "values", samples) if self.roles.critic else []
        t1 = time.perf_counter()
        rewards = self.score(samples)
        timings["time/reward"] = time.perf_counter() - t1
        experience, info = self.make_experience(samples, rewards, log_probs_f, ref_f, values_f)
        timings["time/make_experience"] = time.perf_counter() - t0 - timings["time/reward"]

        self._phase = "train"
        t0 = time.perf_counter()
        train_metrics = self.train(experience)
        timings["time/train"] = time.perf_counter() - t0
        self._phase = "idle"

        self.kl_ctl.update(info["kl"], len(samples))
        elapsed = time.perf_counter() - t_start
        return {**info, **train_metrics, **timings, "time/step": elapsed, "samples": float(len(samples)),
                "samples_per_s": len(samples) / elapsed, "kl_coef": self.kl_ctl.value}

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
    def generate(self, batch: list[PromptExample], n: Optional[int] = None, evaluation: bool = False) -> Samples:
        """n samples per prompt; whole prompts go to one actor worker so a group stays contiguous."""
        n = n or self.cfg.n_samples_per_prompt
        shards = _split(len(batch), len(self.roles.actor))
        futures = []
        for worker, s in zip(self.roles.actor.workers, shards):
            prompts = [p.prompt for p in batch[s] for _ in range(n)]
            labels = [p.label for p in batch[s] for _ in range(n)]
            futures.append(worker.call.remote("generate", prompts, labels, self.state.step, evaluation))
        return Samples.concat(get(futures), self.pad_token_id)

    def score(self, samples: Samples, during: Optional[str] = None) -> RewardBatch:
        """Rewards for prompt + response; a failure stops the run after a checkpoint, never a reward of 0.

        `during` names what was being scored in the message (default: the step under way)."""
        queries = samples.queries if len(samples.queries) == len(samples) else \
            [build_query(p, r) for p, r in zip(samples.prompts, samples.responses)]
        try:
            if self.roles.reward is not None:
                shards = _split(len(queries), len(self.roles.reward))
                parts = get([w.call.remote("score", queries[s], samples.prompts[s], samples.labels[s])
                             for w, s in zip(self.roles.reward.workers, shards)])
                batch = RewardBatch.concat(parts)
            else:
                assert self.reward is not None
                batch = self._score_source(queries, samples.prompts, samples.labels)
        except RewardError as exc:
            what = during or f"step {self.state.step + 1}"
            folder = self.save_checkpoint()
            raise RewardError(f"{what}: the reward failed, so the run stops (a failure is never a reward of 0). "
                              f"Checkpoint of step {self.state.step} saved in {folder}; resume with "
                              f"--load-checkpoint.\n{exc}{_fault_details(exc, samples)}") from None
        if len(batch.rewards) != len(queries):
            raise RewardError(f"step {self.state.step + 1}: {len(batch.rewards)} rewards for {len(queries)} queries")
        return batch

    def _score_source(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        """A reward_func.py is called per micro-rollout batch, as OpenRLHF calls it (--reward-workers of them at
        once); a reward server gets the whole batch (its client spreads it over the servers)."""
        from rlhfctl.rewards.pool import FunctionPool

        assert self.reward is not None
        if isinstance(self.reward, FunctionPool):
            size = self.cfg.micro_rollout_batch_size * self.cfg.n_samples_per_prompt
            return self.reward.score_chunks(queries, prompts, labels, size)
        return self.reward.score(queries, prompts, labels)

    def make_experience(self, samples: Samples, rewards: RewardBatch, log_probs_f: list[Any], ref_f: list[Any],
                        values_f: list[Any]) -> tuple[Experience, dict[str, float]]:
        cfg = self.cfg
        action_mask = samples.action_mask
        raw = torch.tensor(rewards.rewards, dtype=torch.float32)
        clipped = raw.clamp(*cfg.reward_clip_range)
        log_probs = torch.cat(get(log_probs_f))
        ref_log_probs = torch.cat(get(ref_f)) if ref_f else None
        values = torch.cat(get(values_f)) if values_f else None
        kl = F.approx_kl(log_probs, ref_log_probs, action_mask, cfg.kl_estimator) if ref_log_probs is not None \
            else None
        advantages, returns = F.compute_advantages(
            cfg.advantage_estimator, clipped, kl if self.kl_ctl.value > 0 else None, action_mask, values=values,
            gamma=cfg.gamma, lambd=cfg.lambd, kl_coef=self.kl_ctl.value, n_samples_per_prompt=cfg.n_samples_per_prompt,
            whiten=cfg.advantage_whiten,  # None: OpenRLHF's default per estimator
        )
        lengths = action_mask.sum(dim=1).float()
        seq_kl = F.masked_mean(kl, action_mask, dim=1) if kl is not None else torch.zeros(len(samples))
        experience = Experience(samples.sequences, samples.attention_mask, action_mask, log_probs, clipped,
                                ref_log_probs=ref_log_probs, values=values, advantages=advantages, returns=returns,
                                kl=kl, info={"response_length": lengths})
        info = {"reward": float(raw.mean()), "reward_std": float(raw.std()) if len(raw) > 1 else 0.0,
                "kl": float(seq_kl.mean()), "response_length": float(lengths.mean()),
                "advantages_abs": float(F.masked_mean(advantages.abs(), action_mask))}
        if values is not None:
            info["values"] = float(F.masked_mean(values, action_mask))
        info.update(_extra_log_means(rewards, "reward/"))
        return experience, info

    def train(self, experience: Experience) -> dict[str, float]:
        """Actor and critic train at the same time, each on its data-parallel shards of the batch."""
        step = self.state.step
        actor = self.roles.actor
        self._train_futures = [w.call.remote("train", experience.shard(r, len(actor)), step)
                               for r, w in enumerate(actor.workers)]
        critic_futures = []
        if self.roles.critic is not None:
            critic = self.roles.critic
            critic_futures = [w.call.remote("train", experience.shard(r, len(critic)), step)
                              for r, w in enumerate(critic.workers)]
        actor_stats = get(self._train_futures)
        critic_stats = get(critic_futures)
        self._train_futures = []
        metrics = {}
        for prefix, stats in (("actor", actor_stats), ("critic", critic_stats)):
            for key in {k for s in stats for k in s}:
                mean = sum(s[key] for s in stats if key in s) / max(1, sum(1 for s in stats if key in s))
                name = key if key in ("policy_loss", "clip_ratio", "value_loss") else f"{prefix}_{key}"
                metrics[name] = mean
        return metrics

    # ------------------------------------------------------------------------------------------------ saving
    def save_checkpoint(self) -> str:
        """Every trained role writes its engine state; trainer_state.json last marks the folder complete."""
        folder = self.checkpoints.begin(self.state.step)
        futures = self.roles.actor.call_all("save_checkpoint", str(folder / "actor"))
        if self.roles.critic is not None:
            futures += self.roles.critic.call_all("save_checkpoint", str(folder / "critic"))
        get(futures)
        self.state.kl_coef = self.kl_ctl.value
        self.checkpoints.finish(folder, self.state)
        self.tracker.note(f"checkpoint of step {self.state.step} saved in {folder}")
        return str(folder)

    def load_checkpoint(self, folder: str) -> None:
        from pathlib import Path

        futures = self.roles.actor.call_all("load_checkpoint", str(Path(folder) / "actor"))
        if self.roles.critic is not None:
            futures += self.roles.critic.call_all("load_checkpoint", str(Path(folder) / "critic"))
        get(futures)
        self.state = TrainerState.from_file(Path(folder) / "trainer_state.json")
        self.kl_ctl.value = self.state.kl_coef

    def save_pretrained(self, save_path: str) -> None:
        from pathlib import Path

        futures = self.roles.actor.call_all("save_pretrained", save_path)
        if self.roles.critic is not None:
            futures += self.roles.critic.call_all("save_pretrained", str(Path(save_path) / "critic"))
        get(futures)
