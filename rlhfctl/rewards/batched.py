"""BatchedSource: a reward model scored in padded forward passes (ModelReward, JudgeModel), which serve-rm's
DynamicBatcher shares across requests; and how texts are grouped into those passes.

No torch here: serve-rm's server process imports it and never imports torch.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, Sequence

from rlhfctl.rewards.base import RewardBatch, RewardSource
from rlhfctl.rewards.judge import Value, batch_of_values, judge_inputs

if TYPE_CHECKING:
    import torch


def plan_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped into forward passes: sorted by length, each at most `batch_size` texts and at most
    `max_batch_tokens` padded tokens (longest x count); a text longer than the budget goes alone."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) >= batch_size or lengths[i] * (len(current) + 1) > max_batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def default_batch_tokens(device: torch.device) -> int:
    """A GPU wants big forward passes. On CPU, CPU time per text is lowest for passes of about 1k tokens and rises
    beyond (activations fall out of the caches): with the models of benchmarks/serve_rm.py, 2 texts of 512 tokens
    cost 8% less each than one at a time, 8 cost 26% more."""
    return 16384 if device.type == "cuda" else 1024


class BatchedSource(RewardSource):
    """A model whose texts can share forward passes with other requests' texts: render, tokenise, forward rows.
    Right padding and one reward read per row, so a text's reward does not depend on its company."""

    cacheable = True  # a text's reward depends on that text alone (tests/unit/test_serve_rm_batcher.py)

    def __init__(self, model: Any, tokenizer: Any, *, name: str, max_len: int, batch_size: int,
                 max_batch_tokens: int | None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.max_len = max_len
        self.batch_size = batch_size  # most texts in one forward pass
        # most padded tokens (longest text x texts) in one forward pass
        self.max_batch_tokens = max_batch_tokens or default_batch_tokens(model.device)
        self._lock = threading.Lock()  # score() may be called from several threads; passes take turns

    def score(self, queries: list[str], prompts: list[str] | None = None,
              labels: list[str] | None = None) -> RewardBatch:
        """Rewards in the order of `queries`, from length-sorted passes under the batch limits (prompts and labels
        matter only to a source that renders its own texts)."""
        prompts, labels, empty = judge_inputs(queries, prompts, labels)
        if empty is not None:
            return empty
        ids = self.encode(self.render(queries, prompts, labels))
        values: list[Value] = [0.0] * len(ids)
        for group in plan_batches([len(row) for row in ids], self.batch_size, self.max_batch_tokens):
            for i, value in zip(group, self.forward([ids[i] for i in group])):
                values[i] = value
        return batch_of_values(values)

    def render(self, queries: Sequence[str], prompts: Sequence[str], labels: Sequence[str]) -> list[str]:
        """The text the model reads for each query: the query itself, unless the source builds its own from the
        prompt and label (a judge's template)."""
        return list(queries)

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of rendered texts, each cut to the model's longest input."""

    @abstractmethod
    def forward(self, batch: Sequence[Sequence[int]]) -> Sequence[Value]:
        """One value per row of one forward pass: a reward, or (reward, extra_logs values)."""
