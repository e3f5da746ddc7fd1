"""One protocol for where a PPO step's scored batch comes from: `Rollouts.next(step)`.

Three implementations: `SyncRollouts` generates the step's prompts when asked (and scores them while the models
run their forwards), `FilteredRollouts` runs DAPO's dynamic sampling (ppo/dynamic_sampling.py: scores decide which
prompt groups stay), and ppo/async_loop.AsyncRollouts produces either ahead of time on the vLLM engines
(--async-train). The loop also tells the rollouts when a step's update is applied (`updated`: the weights go to the
engines), takes them alone for evaluation (`exclusive`), and stops them (`stop`).
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Optional

from rlhfctl.data import PromptExample
from rlhfctl.errors import RewardError
from rlhfctl.ppo import dynamic_sampling
from rlhfctl.rollout.samples import Samples
from rlhfctl.ppo.failures import Failures
from rlhfctl.ppo.tracking import Tracker
from rlhfctl.rewards.base import RewardBatch
from rlhfctl.rollout.base import Rollout

Score = Callable[[Samples], RewardBatch]
Sync = Callable[[], Optional[float]]  # weights to the engines; seconds taken, None when there is nothing to send


@dataclass
class ScoredBatch:
    """One step's samples and their rewards. `rewards` is None until `score()` when scoring waits to overlap the
    log-prob and value forwards (the synchronous mode)."""

    step: int  # the (0-based) step it is trained in
    samples: Samples
    rewards: Optional[RewardBatch] = None
    metrics: dict[str, float] = field(default_factory=dict)  # --dynamic-filtering counts, policy version
    timings: dict[str, float] = field(default_factory=dict)  # time/generate, time/reward, time/rollout_wait
    scorer: Optional[Score] = None

    def score(self) -> RewardBatch:
        if self.rewards is None:
            assert self.scorer is not None
            t0 = time.perf_counter()
            self.rewards = self.scorer(self.samples)
            self.timings["time/reward"] = time.perf_counter() - t0
        return self.rewards


class PromptBatches:
    """--rollout-batch-size prompts per step, in an order reshuffled each episode from --seed (a resumed run draws
    what the uninterrupted run drew); a last partial batch is dropped, as OpenRLHF does."""

    def __init__(self, prompts: list[PromptExample], rollout_batch_size: int, seed: int) -> None:
        self.prompts = prompts
        self.size = rollout_batch_size
        self.seed = seed
        self.per_episode = len(prompts) // rollout_batch_size

    def for_step(self, step: int) -> list[PromptExample]:
        episode, index = divmod(step, self.per_episode)
        order = list(range(len(self.prompts)))
        random.Random(self.seed * 1009 + episode).shuffle(order)
        return [self.prompts[i] for i in order[index * self.size:(index + 1) * self.size]]


class SamplesGenerator:
    """n samples per prompt from the rollout backend (HF generate on the actor workers, or vLLM engines); an agent
    episode that fails (--agent-func-path) stops the run as a reward failure does."""

    def __init__(self, backend: Rollout, failures: Failures, *, n_samples_per_prompt: int,
                 eval_n_samples_per_prompt: int) -> None:
        self.backend = backend
        self.failures = failures
        self.n_samples_per_prompt = n_samples_per_prompt
        self.eval_n_samples_per_prompt = eval_n_samples_per_prompt

    def generate(self, batch: list[PromptExample], step: int, round: int = 0, evaluation: bool = False) -> Samples:
        """`round` > 0: a dynamic-filtering resample within the step, drawn from a seed of its own; `step`: the step
        the samples are for (--async-train generates ahead)."""
        n = self.eval_n_samples_per_prompt if evaluation else self.n_samples_per_prompt
        try:
            return self.backend.generate(batch, n, step, evaluation, round)
        except RewardError as exc:  # the agent's environment is the reward
            self.failures.agent_failed(exc, f"the evaluation after step {step}" if evaluation else f"step {step + 1}")


class Rollouts:
    """Where the loop's scored batches come from; this base runs in the driver's thread, one step at a time."""

    interleaved = False  # scoring decides what is generated next (dynamic filtering)

    def next(self, step: int) -> ScoredBatch:
        raise NotImplementedError

    def updated(self, step: int, since: float, sync: Optional[Sync]) -> dict[str, float]:
        """Step `step`'s update is applied (`sync` None: the policy did not change): the engines get the weights
        before generating the next step. `since`: when the step's rollout was ready."""
        seconds = sync() if sync is not None else None
        return {} if seconds is None else {"time/weight_sync": seconds}

    def exclusive(self) -> ContextManager[None]:
        """The engines and the reward to the driver alone (evaluation)."""
        return contextlib.nullcontext()

    def stop(self) -> None:
        """Drop what is in flight (Ctrl-C, an error)."""


class SyncRollouts(Rollouts):
    """The step's prompts, generated when the loop asks; `score` runs when the batch's rewards are asked for."""

    def __init__(self, prompts: PromptBatches, generator: SamplesGenerator, score: Score) -> None:
        self.prompts = prompts
        self.generator = generator
        self.score = score

    def next(self, step: int) -> ScoredBatch:
        t0 = time.perf_counter()
        samples = self.generator.generate(self.prompts.for_step(step), step)
        return ScoredBatch(step, samples, timings={"time/generate": time.perf_counter() - t0}, scorer=self.score)


@dataclass(frozen=True)
class FilterOptions:
    """--dynamic-filtering's settings and what the resampling needs to know."""

    n_samples_per_prompt: int
    reward_range: tuple[float, float]
    max_rounds: int
    world_size: int  # extra prompts come in multiples of it, so every actor worker gets whole prompts
    seed: int
    pad_token_id: int


class FilteredRollouts(Rollouts):
    """--dynamic-filtering: rounds of generation and scoring until the batch holds groups with a signal."""

    interleaved = True

    def __init__(self, prompts: PromptBatches, generator: SamplesGenerator, score: Score, options: FilterOptions,
                 tracker: Tracker) -> None:
        self.prompts = prompts
        self.generator = generator
        self.score = score
        self.options = options
        self.tracker = tracker

    def next(self, step: int) -> ScoredBatch:
        o = self.options
        batch = self.prompts.for_step(step)
        t0 = time.perf_counter()
        out = dynamic_sampling.filtered_rollout(
            batch, self.prompts.prompts, lambda prompts, r: self.generator.generate(prompts, step, round=r),
            self.score, n_samples_per_prompt=o.n_samples_per_prompt, reward_range=o.reward_range,
            max_rounds=o.max_rounds, world_size=o.world_size, rng=random.Random(o.seed * 7919 + step),
            pad_token_id=o.pad_token_id)
        if out.metrics["dynamic_filtering/padded_groups"]:
            self.tracker.note(f"step {step + 1}: --dynamic-filtering kept {out.kept_groups} of "
                              f"{len(batch)} groups after {out.metrics['dynamic_filtering/extra_rounds']:.0f} extra "
                              "rounds; dropped groups fill the rest of the batch")
        generate_seconds = time.perf_counter() - t0 - out.score_seconds
        return ScoredBatch(step, out.samples, out.rewards, dict(out.metrics),
                           {"time/reward": out.score_seconds, "time/generate": generate_seconds})
