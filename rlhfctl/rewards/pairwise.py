"""PairwiseReward: rewards from a model that compares two responses to one prompt (PairRM-style).

The model reads `--pairwise-template` filled with the prompt and responses A and B; its output (read like any
reward model's, --reward-output included) is the logit of P(A beats B). Each ordered pair of a group is compared,
and the two orders averaged, P(i beats j) = (p(i, j) + 1 - p(j, i)) / 2, so the answer does not depend on which
response came first. A sample's reward is then its mean P(beats) against the rest of its group (winrate), or its
Bradley-Terry strength fitted to the group's P matrix (bt: P(i beats j) = sigmoid(s_i - s_j), mean 0). A group is
the samples of one request that share a prompt; a lone sample has nobody to beat and gets the neutral value
(winrate 0.5, bt 0). A group of m costs m(m-1) forward passes' worth of texts.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from rlhfctl.rewards.base import RewardBatch, RewardSource, check_batch
from rlhfctl.rewards.contract import RewardFault
from rlhfctl.rewards.groups import groups_by_prompt

NEUTRAL = {"winrate": 0.5, "bt": 0.0}
_SLOT = re.compile(r"\{(prompt|response_a|response_b)\}")


def fill(template: str, prompt: str, response_a: str, response_b: str) -> str:
    """The template with its slots filled in one pass (a response that contains "{prompt}" stays as it is)."""
    values = {"prompt": prompt, "response_a": response_a, "response_b": response_b}
    return _SLOT.sub(lambda m: values[m.group(1)], template)


def response_of(query: str, prompt: str) -> str:
    """The response part of a query (prompt + response); the whole query when it does not start with the prompt."""
    return query[len(prompt):] if prompt and query.startswith(prompt) else query


def bradley_terry(wins: list[list[float]], l2: float = 1e-6, steps: int = 100) -> list[float]:
    """Strengths s (mean 0) maximising sum_{i != j} P_ij log sigmoid(s_i - s_j) - l2/2 |s|^2, by Newton's method
    (the objective is concave; the tiny l2 keeps s finite when one response beats another with certainty)."""
    import torch

    p = torch.tensor(wins, dtype=torch.float64)
    m = p.shape[0]
    s = torch.zeros(m, dtype=torch.float64)
    off = 1.0 - torch.eye(m, dtype=torch.float64)
    for _ in range(steps):
        sig = torch.sigmoid(s[:, None] - s[None, :])
        grad = ((p - sig) * off).sum(1) - l2 * s
        w = sig * (1 - sig) * off
        hessian = w - torch.diag(w.sum(1)) - l2 * torch.eye(m, dtype=torch.float64)
        step = torch.linalg.solve(hessian, grad)
        s = s - step
        if float(step.abs().max()) < 1e-10:
            break
    return (s - s.mean()).tolist()


class PairwiseReward(RewardSource):
    """A RewardSource over a comparison model (a ModelReward scoring filled templates)."""

    pairwise = True  # a sample's reward depends on the rest of its group, so it is not cacheable either

    def __init__(self, comparator: Any, *, template: str, score: Literal["winrate", "bt"] = "winrate",
                 name: str | None = None) -> None:
        self.comparator = comparator
        self.template = template
        self.mode = score
        self.name = name or f"pairwise {comparator.name}"

    @property
    def model(self) -> Any:  # the reward-model worker offloads it between calls
        return self.comparator.model

    def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        if (empty := check_batch(queries, prompts, labels)) is not None:
            return empty
        if len(queries) > 1 and not any(prompts):
            raise RewardFault("a pairwise reward compares the responses to one prompt, so it needs the prompts: "
                              "send \"prompts\" (one per query)", kind="prompts", where=self.name)
        groups = groups_by_prompt(prompts)
        texts, pairs = [], []
        for group in groups:
            responses = [response_of(queries[i], prompts[i]) for i in group]
            for a in range(len(group)):
                for b in range(len(group)):
                    if a != b:
                        pairs.append((id(group), a, b))
                        texts.append(fill(self.template, prompts[group[0]], responses[a], responses[b]))
        logits = self.comparator.score(texts).rewards if texts else []
        p_first = {key: 1.0 / (1.0 + math.exp(-logit)) for key, logit in zip(pairs, logits)}
        rewards = [NEUTRAL[self.mode]] * len(queries)
        for group in groups:
            m = len(group)
            if m < 2:
                continue
            wins = [[0.5 if a == b else (p_first[(id(group), a, b)] + 1.0 - p_first[(id(group), b, a)]) / 2
                     for b in range(m)] for a in range(m)]
            values = [(sum(row) - 0.5) / (m - 1) for row in wins] if self.mode == "winrate" \
                else bradley_terry(wins)
            for i, value in zip(group, values):
                rewards[i] = value
        return RewardBatch(rewards=rewards)

    def close(self) -> None:
        self.comparator.close()
