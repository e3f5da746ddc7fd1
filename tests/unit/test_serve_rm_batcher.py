"""The dynamic batcher with a real tiny reward model: which texts share a forward pass, and that sharing one never
changes a reward."""

from __future__ import annotations

import asyncio
import random

import pytest

from rlhfctl.models.reward import load_reward_model
from rlhfctl.rewards.model import ModelReward
from rlhfctl.serving.batcher import CostModel, DynamicBatcher
from rlhfctl.serving.metrics import ServerMetrics


@pytest.fixture(scope="module")
def source(tiny_rm_seqcls_dir) -> ModelReward:
    model, tokenizer = load_reward_model(tiny_rm_seqcls_dir)
    return ModelReward(model, tokenizer, batch_size=8, max_batch_tokens=256)


class Recorder(ModelReward):
    """The same model, remembering the token lengths of each forward pass it runs."""

    def __init__(self, inner: ModelReward) -> None:
        super().__init__(inner.model, inner.tokenizer, batch_size=inner.batch_size,
                         max_batch_tokens=inner.max_batch_tokens)
        self.passes: list[list[int]] = []

    def forward(self, batch):
        self.passes.append([len(row) for row in batch])
        return super().forward(batch)


def texts_of_lengths(source: ModelReward, lengths: list[int]) -> list[str]:
    """Texts that tokenise (with the appended eos) to exactly these lengths."""
    out = []
    for n in lengths:
        text = " cat" * (n - 1)  # " cat" is one token
        assert len(source.encode([text])[0]) == n
        out.append(text)
    return out


def run(batcher: DynamicBatcher, requests: list[list[str]]) -> list[list[float]]:
    async def main() -> list[list[float]]:
        batcher.start()
        try:
            batches = await asyncio.gather(*(batcher.score(q, [""] * len(q), [""] * len(q)) for q in requests))
        finally:
            await asyncio.to_thread(batcher.stop)
        return [b.rewards for b in batches]

    return asyncio.run(main())


def test_rewards_equal_scoring_alone_under_any_grouping(source):
    rng = random.Random(1)
    words = "the cat sat on a mat and the dog ran to the river".split()
    requests = [[" ".join(rng.choices(words, k=rng.randint(1, 80))) for _ in range(rng.randint(1, 5))]
                for _ in range(30)]
    recorder = Recorder(source)
    got = run(DynamicBatcher(recorder, ServerMetrics(), max_wait_ms=20), requests)
    for queries, rewards in zip(requests, got):
        for text, reward in zip(queries, rewards):
            assert abs(reward - source.forward(source.encode([text]))[0]) < 1e-5
    assert max(len(p) for p in recorder.passes) > 5  # texts of different requests did share passes
    for lengths in recorder.passes:
        assert len(lengths) <= 8 and (len(lengths) == 1 or max(lengths) * len(lengths) <= 256)


def test_cheap_overhead_means_only_equal_lengths_share_a_pass(source):
    # A model whose passes cost nothing beyond their tokens gains nothing from padding: no text is padded.
    recorder = Recorder(source)
    batcher = DynamicBatcher(recorder, ServerMetrics(), max_wait_ms=50)
    batcher.cost = CostModel(overhead_s=0.0, per_token_s=1e-6)
    lengths = [5, 5, 9, 9, 9, 14, 20, 20]
    run(batcher, [[t] for t in texts_of_lengths(source, lengths)])
    assert all(len(set(p)) == 1 for p in recorder.passes)
    assert sorted(len(p) for p in recorder.passes) == [1, 2, 2, 3]


def test_costly_overhead_fills_batches_with_the_nearest_lengths(source):
    recorder = Recorder(source)
    batcher = DynamicBatcher(recorder, ServerMetrics(), max_wait_ms=50)
    batcher.cost = CostModel(overhead_s=1.0, per_token_s=1e-6)
    lengths = [3, 20, 4, 21, 5, 22, 6, 23, 7, 24, 8, 25, 9, 26, 10, 27]
    run(batcher, [texts_of_lengths(source, lengths)])
    assert sorted(sorted(p) for p in recorder.passes) == [[3, 4, 5, 6, 7, 8, 9, 10], [20, 21, 22, 23, 24, 25, 26, 27]]


def test_a_text_longer_than_the_budget_runs_alone(source):
    recorder = Recorder(source)
    batcher = DynamicBatcher(recorder, ServerMetrics(), max_wait_ms=50)
    batcher.cost = CostModel(overhead_s=1.0, per_token_s=1e-6)
    run(batcher, [texts_of_lengths(source, [300, 5, 6])])
    assert sorted(sorted(p) for p in recorder.passes) == [[5, 6], [300]]


def test_texts_long_next_to_the_overhead_share_passes_only_with_equal_lengths(source):
    # A pass costs 10 tokens' worth beyond its text: a 50-token text gains little from company, padding costs more.
    recorder = Recorder(source)
    batcher = DynamicBatcher(recorder, ServerMetrics(), max_wait_ms=50)
    batcher.cost = CostModel(overhead_s=1e-5, per_token_s=1e-6)
    run(batcher, [texts_of_lengths(source, [3, 50, 52, 52, 54, 4])])  # the oldest (3) goes first
    assert sorted(sorted(p) for p in recorder.passes) == [[3, 4], [50], [52, 52], [54]]
