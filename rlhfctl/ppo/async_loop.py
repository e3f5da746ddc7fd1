"""--async-train: the next steps' rollouts are generated and scored on the vLLM engines while this step trains.

A producer thread in the driver walks the steps in order, generating and scoring each step's batch and putting it
in a queue of --async-queue-size; the driver trains on what it takes from the queue. Each rollout records the
policy version it was generated with (the number of steps whose updates the engines held), and the producer starts
step s only once the engines hold version >= s - queue_size, so no sample lags its training step by more than
--async-queue-size updates (rollout/policy_version_lag). Weight sync and generation never overlap: both take the
engine lock, so a version is exact.

--partial-rollout (OpenRLHF's partial_rollout): the sync does not take the engine lock, so it lands while the
producer's generation is in flight; each engine pauses its requests, loads the new weights and resumes them
(rollout/engine.py), so a long generation never holds the next update back. A sample's tokens then come from up to
a few consecutive policy versions: rollout/policy_version is the version the batch STARTED with (the oldest policy
any of its tokens came from, so rollout/policy_version_lag stays an upper bound and the staleness bound holds as
before), rollout/partial_samples counts the samples a sync split, rollout/policy_version_span is the most versions
within one sample. Tokens sampled before a sync keep the log-probs the engine reported when it sampled them, so
--enable-vllm-is-correction weighs each token by the policy that really produced it.

A failure in the producer (a reward that fails, an engine error) is carried to
the driver with the batch it belongs to and raised there, where the synchronous loop raises it. At a stop (Ctrl-C,
an error) the rollout in flight is dropped and its requests are aborted inside the engines: a resumed run generates
it again from the checkpoint's step.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from rlhfctl.errors import RewardError
from rlhfctl.rollout.samples import Samples
from rlhfctl.ppo.rollouts import Rollouts, Score, ScoredBatch, Sync
from rlhfctl.ppo.scoring import Scorer
from rlhfctl.rewards.base import RewardBatch

POLL_SECONDS = 0.2  # how often blocked waits look at the stop flag


@dataclass
class _Ready:
    """One step's rollout as the producer left it: the scored batch, or the error that stopped it (with the samples
    it was scoring, for the failure's details)."""

    step: int
    version: int  # the policy version (steps of updates) the engines generated it with
    batch: Optional[ScoredBatch] = None
    error: Optional[BaseException] = None
    samples: Optional[Samples] = None


class _Stopped(Exception):
    """Internal: the producer was told to stop."""


class AsyncRollouts(Rollouts):
    """The producer thread and the driver's side of it. `inner(score)` builds the rollouts the producer runs
    (synchronous or filtered) around a `score` that raises a reward's failure as it was raised; `scorer` applies
    the reward-failure policy in the driver, at the step the failure belongs to."""

    def __init__(self, inner: Callable[[Score], Rollouts], scorer: Scorer, first_step: int, total_steps: int,
                 queue_size: int, partial: bool = False, abort: Callable[[], None] = lambda: None) -> None:
        """`partial`: --partial-rollout (the sync lands mid-generation); `abort` aborts the engines' generation in
        flight (at stop)."""
        self.scorer = scorer
        self.partial = partial
        self.abort = abort
        self.inner = inner(self._score)
        self.queue_size = queue_size
        self.total_steps = total_steps
        self.engine_lock = threading.Lock()  # generation vs weight sync and evaluation
        self.reward_lock = threading.Lock()  # the producer's scoring vs evaluation's
        self._version = first_step  # the engines hold the weights after `first_step` updates
        self._changed = threading.Condition()
        self._queue: queue.Queue[_Ready] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._busy: list[tuple[float, float]] = []  # producer's generate+score intervals (perf_counter)
        self._busy_since: Optional[float] = None
        self._scored: Optional[Samples] = None  # the last batch handed to the reward, for a failure's details
        self._thread = threading.Thread(target=self._run, args=(first_step,), name="rlhfctl-rollouts", daemon=True)
        self._thread.start()

    # -------------------------------------------------------------------------------------------- producer
    def _run(self, first_step: int) -> None:
        for step in range(first_step, self.total_steps):
            try:
                with self._changed:  # the staleness bound: wait for the engines to hold a recent enough policy
                    while self._version < step - self.queue_size:
                        self._wait(self._changed)
                ready = self._produce(step)
                while True:
                    self._check_stop()
                    try:
                        self._queue.put(ready, timeout=POLL_SECONDS)
                        break
                    except queue.Full:
                        continue
            except _Stopped:
                return
            if ready.error is not None:
                return

    def _score(self, samples: Samples) -> RewardBatch:
        self._scored = samples
        return self.scorer.call(samples)

    def _produce(self, step: int) -> _Ready:
        t0 = time.perf_counter()
        self._busy_since = t0
        self._scored = None
        ready = _Ready(step, self._version)
        try:
            if self.inner.interleaved:  # scoring decides what is kept: the whole rollout holds both locks
                with self.engine_lock, self.reward_lock:
                    self._check_stop()
                    ready.version = self._version
                    ready.batch = self.inner.next(step)
            else:
                with self.engine_lock:
                    self._check_stop()
                    ready.version = self._version
                    ready.batch = self.inner.next(step)
                with self.reward_lock:
                    ready.batch.score()
        except _Stopped:
            raise
        except BaseException as exc:  # raised in the driver, at this step
            if self._stop.is_set():
                raise _Stopped() from None  # the engines were shut down under it
            ready.error = exc
            ready.samples = ready.batch.samples if ready.batch is not None else self._scored
        finally:
            self._busy.append((t0, time.perf_counter()))
            self._busy_since = None
        return ready

    def _wait(self, condition: threading.Condition) -> None:
        self._check_stop()
        condition.wait(POLL_SECONDS)
        self._check_stop()

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise _Stopped()

    # -------------------------------------------------------------------------------------------- driver
    def next(self, step: int) -> ScoredBatch:
        """Step `step`'s rollout, waiting for the producer if it is behind (time/rollout_wait); the producer's
        failure raised as the synchronous loop raises it (a reward failure: the same checkpoint and message)."""
        t0 = time.perf_counter()
        while True:
            if not self._thread.is_alive() and self._queue.empty():
                raise RuntimeError(f"internal: the rollout producer stopped before step {step + 1}")
            try:
                ready = self._queue.get(timeout=POLL_SECONDS)
                break
            except queue.Empty:
                continue
        if ready.step != step:
            raise RuntimeError(f"internal: the rollout producer sent step {ready.step + 1} for step {step + 1}")
        if isinstance(ready.error, RewardError):
            self.scorer.failed(ready.error, ready.samples)
        if ready.error is not None:
            raise ready.error
        assert ready.batch is not None
        batch = ready.batch
        batch.rewards = self.scorer.checked(batch.score(), batch.samples)
        batch.timings["time/rollout_wait"] = time.perf_counter() - t0
        batch.metrics["rollout/policy_version"] = float(ready.version)
        batch.metrics["rollout/policy_version_lag"] = float(step - ready.version)
        if self.partial and batch.samples.version_span is not None:
            batch.metrics.update(version_span_metrics(batch.samples.version_span))
        return batch

    def updated(self, step: int, since: float, sync: Optional[Sync]) -> dict[str, float]:
        """Step `step`'s update is applied: send it to the engines (`sync`; None when the policy did not change)
        once the rollout in flight is done, and let the producer go on. Returns time/weight_sync and time/overlap:
        the seconds since `since` (when this step's rollout was ready) the engines spent generating ahead."""
        out = {"time/overlap": self._overlap(since, time.perf_counter())}
        # --partial-rollout: the engines pause the generation in flight for the sync instead of it waiting
        with contextlib.nullcontext() if self.partial else self.engine_lock:
            seconds = sync() if sync is not None else None
            with self._changed:
                self._version = step + 1
                self._changed.notify_all()
        if seconds is not None:
            out["time/weight_sync"] = seconds
        return out

    def _overlap(self, start: float, end: float) -> float:
        spans = list(self._busy)
        busy_since = self._busy_since
        if busy_since is not None:
            spans.append((busy_since, end))
        return sum(max(0.0, min(end, b) - max(start, a)) for a, b in spans)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the engines and the reward for the driver (evaluation), after the producer's work in flight."""
        with self.engine_lock, self.reward_lock:
            yield

    def stop(self) -> None:
        """Stop the producer; a rollout in flight is dropped (the thread exits once its call returns or fails)."""
        self._stop.set()
        self.abort()  # the producer's generation in flight stops inside the engines, not only here
        with self._changed:
            self._changed.notify_all()


def version_span_metrics(version_span: torch.Tensor) -> dict[str, float]:
    """rollout/partial_samples: samples whose tokens came from more than one policy version (a sync split them);
    rollout/policy_version_span: the most policy versions within one sample."""
    return {"rollout/partial_samples": float((version_span > 1).sum()),
            "rollout/policy_version_span": float(version_span.max())}
