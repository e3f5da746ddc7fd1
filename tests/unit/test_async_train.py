"""--async-train: its options (exit 2 for what cannot run) and the producer's scheduling (ppo/async_loop.py), driven
here by a trainer whose generation and reward are plain functions, so staleness, overlap and stops are timed
exactly; tests/e2e/test_async_train_e2e.py runs it for real on a vLLM engine."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import torch
import yaml

from rlhfctl.errors import RewardError
from rlhfctl.ppo.async_loop import AsyncRollouts
from rlhfctl.ppo.rollouts import Rollouts, ScoredBatch
from tests.helpers import run_cli


def base(tmp_path, policy, prompts) -> list[str]:
    return ["train-ppo", "--pretrain", str(policy), "--prompt-data", str(prompts), "--remote-rm-url",
            str(tmp_path / "r.py"), "--rollout-batch-size", "2", "--train-batch-size", "4",
            "--micro-train-batch-size", "1", "--save-path", str(tmp_path / "out")]


# ------------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize("args, field_values", [
    (["--vllm-num-engines", "1", "--async-train"], {"async_train": True, "async_queue_size": 1}),
    (["--vllm_num_engines", "1", "--async_train", "--async_queue_size", "3"],
     {"async_train": True, "async_queue_size": 3}),
    (["--vllm.num_engines", "1", "--train.async_enable", "--train.async_queue_size", "2"],
     {"async_train": True, "async_queue_size": 2}),
    (["--vllm_num_engines", "1", "--async_train", "--partial_rollout"], {"async_train": True, "partial_rollout": True}),
    (["--vllm.num_engines", "1", "--train.async_enable", "--train.partial_rollout_enable"],
     {"async_train": True, "partial_rollout": True}),
])
def test_openrlhf_spellings_turn_async_training_on(args, field_values, tiny_policy_dir, prompt_file, tmp_path, capsys):
    code, out, err = run_cli([*base(tmp_path, tiny_policy_dir, prompt_file), *args, "--print-config"], capsys)
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert {k: cfg[k] for k in field_values} == field_values


@pytest.mark.parametrize("args, needle", [
    (["--async-train"], "--async-train needs --vllm-num-engines >= 1"),
    (["--async-train", "--vllm-num-engines", "0"], "--vllm-num-engines"),
    (["--vllm-num-engines", "1", "--async-train", "--async-queue-size", "0"], "async-queue-size"),
    (["--vllm-num-engines", "1", "--async-train", "--async-queue-size", "two"], "async-queue-size"),
    (["--vllm-num-engines", "1", "--async-queue-size", "2"], "--async-queue-size has no effect without --async-train"),
    (["--vllm-num-engines", "1", "--partial-rollout"], "--partial-rollout needs --async-train"),
    (["--vllm_num_engines", "1", "--partial_rollout"], "--partial-rollout needs --async-train"),
])
def test_bad_async_options_exit_2_naming_the_option(args, needle, tiny_policy_dir, prompt_file, tmp_path, capsys):
    code, _, err = run_cli([*base(tmp_path, tiny_policy_dir, prompt_file), *args, "--print-config"], capsys)
    err = " ".join(err.split())
    assert code == 2 and needle in err and "Traceback" not in err, err


# ------------------------------------------------------------------------------------------------ the producer
class FakeEngines:
    """Generation and reward as plain functions: generation records the step and its start."""

    def __init__(self, generate_seconds: float = 0.0, fail_reward_at: int | None = None,
                 block_at: int | None = None) -> None:
        self.generate_seconds = generate_seconds
        self.fail_reward_at = fail_reward_at
        self.started: dict[int, float] = {}
        self.block_at = block_at  # that step's generation waits for `release`, as a long one in the engines
        self.release = threading.Event()

    def generate(self, step: int) -> SimpleNamespace:
        self.started[step] = time.perf_counter()
        if step == self.block_at:
            self.release.wait(10)
        time.sleep(self.generate_seconds)
        # policy versions per sample, as the vLLM engines report them: the second sample was split by a sync
        return SimpleNamespace(step=step, version_span=torch.tensor([1, 2, 1]))


class FakeScorer:
    """What AsyncRollouts calls on ppo/scoring.Scorer: the reward's call, its failure policy, its count check."""

    def __init__(self, engines: FakeEngines) -> None:
        self.engines = engines

    def call(self, samples: SimpleNamespace) -> SimpleNamespace:
        if samples.step == self.engines.fail_reward_at:
            raise RewardError("reward_func.py: reward_func raised KeyError('no rule')")
        return SimpleNamespace(rewards=[1.0])

    def checked(self, rewards, samples):
        return rewards

    def failed(self, exc, samples, during=None):
        raise RewardError(f"step {samples.step + 1}: the reward failed ({exc})")


class FakeRollouts(Rollouts):
    """The producer's inner rollouts: generate, then score with the producer's `score` (later, or at once when
    `interleaved`, as dynamic filtering does)."""

    def __init__(self, engines: FakeEngines, score, interleaved: bool = False) -> None:
        self.engines = engines
        self.score = score
        self.interleaved = interleaved

    def next(self, step: int) -> ScoredBatch:
        samples = self.engines.generate(step)
        if not self.interleaved:
            return ScoredBatch(step, samples, scorer=self.score)
        return ScoredBatch(step, samples, self.score(samples), {"dynamic_filtering/extra_rounds": 1.0},
                           {"time/reward": 0.01})


def producer_of(engines: FakeEngines, first_step: int, total_steps: int, queue_size: int,
                interleaved: bool = False, partial: bool = False, abort=lambda: None) -> AsyncRollouts:
    return AsyncRollouts(lambda score: FakeRollouts(engines, score, interleaved), FakeScorer(engines), first_step,
                         total_steps, queue_size, partial, abort)


def drive(producer: AsyncRollouts, steps: int, train_seconds: float) -> list[tuple[int, float, float]]:
    """The driver's side: take each step's rollout, 'train' for train_seconds, then publish the new version.
    Returns (lag, train start, train end) per step."""
    out = []
    for step in range(steps):
        ready = producer.next(step)
        t0 = time.perf_counter()
        time.sleep(train_seconds)
        out.append((int(ready.metrics["rollout/policy_version_lag"]), t0, time.perf_counter()))
        producer.updated(step, t0, sync=None)
    return out


@pytest.mark.parametrize("queue_size", [1, 2])
def test_lag_reaches_but_never_passes_the_queue_size(queue_size):
    """Generation is instant and training slow, so the producer runs ahead as far as it may: exactly queue_size
    versions once it can, never more."""
    producer = producer_of(FakeEngines(), 0, 6, queue_size)
    try:
        lags = [lag for lag, _, _ in drive(producer, 6, train_seconds=0.05)]
    finally:
        producer.stop()
    assert lags == [min(step, queue_size) for step in range(6)]


def test_generation_of_the_next_step_starts_while_this_one_trains():
    engines = FakeEngines(generate_seconds=0.05)
    producer = producer_of(engines, 0, 4, 1)
    try:
        timeline = drive(producer, 4, train_seconds=0.2)
    finally:
        producer.stop()
    for step, (_, _, train_end) in enumerate(timeline[:-1]):
        assert engines.started[step + 1] < train_end  # overlapped, not after
    # and what the trainer logs as time/overlap for such a step is the generation inside it
    producer2 = producer_of(FakeEngines(generate_seconds=0.1), 0, 2, 1)
    try:
        producer2.next(0)
        t0 = time.perf_counter()
        time.sleep(0.3)
        overlap = producer2.updated(0, t0, sync=None)["time/overlap"]
    finally:
        producer2.stop()
    assert 0.05 < overlap <= 0.3


def version(batch: ScoredBatch) -> int:
    return int(batch.metrics["rollout/policy_version"])


def test_a_resumed_producer_starts_at_the_checkpoint_step_with_its_version():
    producer = producer_of(FakeEngines(), 3, 5, 1)
    try:
        first = producer.next(3)
        producer.updated(3, time.perf_counter(), sync=None)
        second = producer.next(4)
    finally:
        producer.stop()
    assert (first.step, version(first), second.step, version(second)) == (3, 3, 4, 3)


def test_weight_sync_waits_for_the_generation_in_flight():
    """Generation and weight sync never overlap, so each rollout's recorded version is the one it used."""
    engines = FakeEngines(block_at=1)
    producer = producer_of(engines, 0, 3, 1)
    try:
        producer.next(0)
        deadline = time.time() + 5
        while 1 not in engines.started and time.time() < deadline:
            time.sleep(0.01)
        synced = []
        syncer = threading.Thread(target=lambda: producer.updated(0, 0.0, sync=lambda: synced.append(
            time.perf_counter())))
        syncer.start()
        time.sleep(0.2)
        assert not synced  # held off by the generation in flight
        engines.release.set()
        syncer.join(5)
        assert synced and version(producer.next(1)) == 0
    finally:
        engines.release.set()
        producer.stop()


def test_partial_rollout_syncs_while_a_generation_runs_and_counts_split_samples():
    """--partial-rollout: the sync does not wait for the generation in flight (the engines pause and resume it);
    each step logs its split samples and the most versions in one sample; stop() aborts the engines' generation."""
    engines = FakeEngines(block_at=1)
    aborted = []
    producer = producer_of(engines, 0, 3, 1, partial=True, abort=lambda: (aborted.append(True), engines.release.set()))
    try:
        first = producer.next(0)
        deadline = time.time() + 5
        while 1 not in engines.started and time.time() < deadline:
            time.sleep(0.01)
        synced = []
        producer.updated(0, 0.0, sync=lambda: synced.append(True))  # returns while step 1's generation is blocked
        assert synced and not engines.release.is_set()
    finally:
        producer.stop()
    assert aborted and engines.release.is_set()
    assert (first.metrics["rollout/partial_samples"], first.metrics["rollout/policy_version_span"]) == (1.0, 2.0)


def test_stop_drops_the_rollout_in_flight():
    engines = FakeEngines(block_at=1)
    producer = producer_of(engines, 0, 4, 1)
    producer.next(0)
    deadline = time.time() + 5
    while 1 not in engines.started and time.time() < deadline:
        time.sleep(0.01)
    producer.stop()
    engines.release.set()  # the engine call returns after the stop: its rollout is not queued
    producer._thread.join(5)
    assert not producer._thread.is_alive() and producer._queue.empty()
    assert 2 not in engines.started  # and nothing further was generated


def test_a_reward_failure_in_the_producer_is_raised_by_the_driver_at_its_step():
    engines = FakeEngines(fail_reward_at=2)
    producer = producer_of(engines, 0, 5, 1)
    try:
        results = [producer.next(s).rewards for s in range(2)]
        for s in range(2):
            producer.updated(s, time.perf_counter(), sync=None)
        with pytest.raises(RewardError, match=r"step 3: the reward failed \(reward_func.py: .*KeyError"):
            producer.next(2)
    finally:
        producer.stop()
    assert [r.rewards for r in results] == [[1.0], [1.0]]
    producer._thread.join(5)
    assert not producer._thread.is_alive() and 3 not in engines.started  # nothing generated past the failure


def test_dynamic_filtering_rounds_run_in_the_producer_and_their_counts_reach_the_step():
    """--dynamic-filtering with --async-train: the producer runs the whole filtered rollout (generation and scoring
    rounds) for the step ahead, with the reward's failures carried like any other."""
    engines = FakeEngines(fail_reward_at=1)
    producer = producer_of(engines, 0, 3, 1, interleaved=True)
    try:
        first = producer.next(0)
        assert first.rewards.rewards == [1.0]
        assert first.metrics["dynamic_filtering/extra_rounds"] == 1.0 and first.timings["time/reward"] == 0.01
        producer.updated(0, time.perf_counter(), sync=None)
        with pytest.raises(RewardError, match="step 2: the reward failed"):
            producer.next(1)
    finally:
        producer.stop()
    assert sorted(engines.started) == [0, 1]
