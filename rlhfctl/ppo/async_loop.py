"""--async-train: the next steps' rollouts are generated and scored on the vLLM engines while this step trains.

A producer thread in the driver walks the steps in order, generating and scoring each step's batch and putting it
in a queue of --async-queue-size; the driver trains on what it takes from the queue. Each rollout records the
policy version it was generated with (the number of steps whose updates the engines held), and the producer starts
step s only once the engines hold version >= s - queue_size, so no sample lags its training step by more than
--async-queue-size updates (rollout/policy_version_lag). Weight sync and generation never overlap: both take the
engine lock, so a version is exact. A failure in the producer (a reward that fails, an engine error) is carried to
the driver with the batch it belongs to and raised there, where the synchronous loop raises it. At a stop (Ctrl-C,
an error) the rollout in flight is dropped: a resumed run generates it again from the checkpoint's step.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, TYPE_CHECKING

from rlhfctl.errors import RewardError

if TYPE_CHECKING:
    from rlhfctl.ppo.experience import Samples
    from rlhfctl.ppo.trainer import PPOTrainer
    from rlhfctl.rewards.base import RewardBatch

POLL_SECONDS = 0.2  # how often blocked waits look at the stop flag


@dataclass
class Ready:
    """One step's rollout as the producer left it: samples and rewards, or the error that stopped it."""

    step: int  # the (0-based) step it is trained in
    version: int  # the policy version (steps of updates) the engines generated it with
    samples: Optional[Samples] = None
    rewards: Optional[RewardBatch] = None
    metrics: dict[str, float] = field(default_factory=dict)  # --dynamic-filtering counts
    timings: dict[str, float] = field(default_factory=dict)  # time/generate, time/reward in the producer
    error: Optional[BaseException] = None

    def result(self, trainer: PPOTrainer) -> RewardBatch:
        """The rewards, or the producer's failure raised as the synchronous loop raises it (a reward failure:
        checkpoint of the last finished step and the same message)."""
        if isinstance(self.error, RewardError):
            trainer.reward_failed(self.error, self.samples)
        if self.error is not None:
            raise self.error
        assert self.rewards is not None and self.samples is not None
        return trainer.reward_count_checked(self.rewards, self.samples)


class _Stopped(Exception):
    """Internal: the producer was told to stop."""


class AsyncRollouts:
    """The producer thread and the driver's side of it (`next`, `updated`, `exclusive`, `stop`)."""

    def __init__(self, trainer: PPOTrainer, first_step: int, total_steps: int, queue_size: int) -> None:
        self.trainer = trainer
        self.queue_size = queue_size
        self.total_steps = total_steps
        self.engine_lock = threading.Lock()  # generation vs weight sync and evaluation
        self.reward_lock = threading.Lock()  # the producer's scoring vs evaluation's
        self._version = first_step  # the engines hold the weights after `first_step` updates
        self._changed = threading.Condition()
        self._queue: queue.Queue[Ready] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._busy: list[tuple[float, float]] = []  # producer's generate+score intervals (perf_counter)
        self._busy_since: Optional[float] = None
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

    def _produce(self, step: int) -> Ready:
        trainer = self.trainer
        episode, index = divmod(step, trainer.per_episode)
        batch = trainer._batch(episode, index)
        scored: list[Samples] = []  # the last batch handed to the reward, for a failure's details

        def score(samples: Samples) -> RewardBatch:
            scored[:] = [samples]
            return trainer.reward_call(samples)

        t0 = time.perf_counter()
        self._busy_since = t0
        ready = Ready(step, self._version)
        try:
            if trainer.cfg.dynamic_filtering:  # scoring decides what is kept: the whole rollout holds both locks
                with self.engine_lock, self.reward_lock:
                    self._check_stop()
                    ready.version = self._version
                    ready.samples, ready.rewards, ready.metrics, seconds = trainer.filtered_rollout(batch, step, score)
                ready.timings = {"time/reward": seconds, "time/generate": time.perf_counter() - t0 - seconds}
            else:
                with self.engine_lock:
                    self._check_stop()
                    ready.version = self._version
                    ready.samples = trainer.generate(batch, step=step)
                t1 = time.perf_counter()
                with self.reward_lock:
                    ready.rewards = score(ready.samples)
                ready.timings = {"time/generate": t1 - t0, "time/reward": time.perf_counter() - t1}
        except _Stopped:
            raise
        except BaseException as exc:  # raised in the driver, at this step
            if self._stop.is_set():
                raise _Stopped() from None  # the engines were shut down under it
            ready.error = exc
            if ready.samples is None and scored:
                ready.samples = scored[0]
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
    def next(self, step: int) -> Ready:
        """Step `step`'s rollout, waiting for the producer if it is behind; time/rollout_wait is that wait."""
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
        ready.timings["time/rollout_wait"] = time.perf_counter() - t0
        ready.metrics["rollout/policy_version"] = float(ready.version)
        ready.metrics["rollout/policy_version_lag"] = float(step - ready.version)
        return ready

    def updated(self, step: int, since: float, sync: Optional[Callable[[], Optional[float]]]) -> dict[str, float]:
        """Step `step`'s update is applied: send it to the engines (`sync`; None with a frozen actor, whose policy
        did not change) once the rollout in flight is done, and let the producer go on. Returns time/weight_sync
        and time/overlap: the seconds since `since` (this step's start) the engines spent generating ahead."""
        out = {"time/overlap": self._overlap(since, time.perf_counter())}
        with self.engine_lock:
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
        with self._changed:
            self._changed.notify_all()
