"""--eval-dataset: the policy as it is now, sampled and scored on held-out prompts (eval/reward, eval/pass@N and
the reward's extra_logs), before the first step, every --eval-steps and after the last."""

from __future__ import annotations

import time

import torch

from rlhfctl.config.train_groups import EvalArgs
from rlhfctl.data import PromptExample
from rlhfctl.ppo.rollouts import SamplesGenerator
from rlhfctl.ppo.scoring import Scorer, extra_log_means


class Evaluation:
    def __init__(self, prompts: list[PromptExample], generator: SamplesGenerator, scorer: Scorer, evaluation: EvalArgs,
                 total_steps: int) -> None:
        self.prompts = prompts
        self.generator = generator
        self.scorer = scorer
        self.every = evaluation.eval_steps
        self.n = evaluation.eval_n_samples_per_prompt
        self.total_steps = total_steps

    def due(self, step: int) -> bool:
        """Whether to evaluate after `step` completed steps (0: before the first)."""
        if not self.prompts:
            return False
        return step == 0 or step == self.total_steps or (self.every > 0 and step % self.every == 0)

    def run(self, step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        samples = self.generator.generate(self.prompts, step, evaluation=True)
        rewards = self.scorer.score(samples, during=f"the evaluation after step {step}")
        per_prompt = torch.tensor(rewards.rewards, dtype=torch.float32).view(-1, self.n)
        return {"eval/reward": float(per_prompt.mean()),
                f"eval/pass@{self.n}": float(per_prompt.max(dim=1).values.mean()),
                "eval/response_length": float(samples.action_mask.sum(dim=1).float().mean()),
                **extra_log_means(rewards, "eval/"),
                "time/evaluate": time.perf_counter() - t0}
