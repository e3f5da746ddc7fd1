"""Contract checks: score every batch of --micro-rollout-batch-size queries as training would, timing each call
and catching each failure per batch. A batch that raises is re-scored one sample at a time to find the sample
that breaks it, so the report can show that sample's input and the user's traceback.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from rlhfctl.checks.samples import Sample
from rlhfctl.errors import RewardError
from rlhfctl.rewards.base import RewardBatch, RewardSource

LOCATE_BATCHES = 3  # failing batches re-scored sample by sample (each costs one call per sample)
LOCATABLE = {"raised", "http", "error"}  # failures that do not say which sample caused them


@dataclass
class Fault:
    """A failure located as precisely as it could be: `sample` is an index into the run's samples, or None."""

    kind: str
    message: str
    run: str
    batch: tuple[int, int]  # [start, end) sample indices of the call that failed
    sample: int | None = None
    traceback: str = ""


@dataclass
class Run:
    """One pass over a list of samples: per-sample rewards (None where the batch failed) and per-call timings."""

    name: str
    samples: list[Sample]
    rewards: list[float | None] = field(default_factory=list)
    extra_logs: dict[str, list[float | None]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    call_seconds: list[tuple[int, float]] = field(default_factory=list)  # (batch size, seconds) per finished call
    timed_out: bool = False
    unscored: int = 0  # samples never sent because the run stopped after a timeout

    @property
    def scored(self) -> list[tuple[Sample, float]]:
        return [(s, r) for s, r in zip(self.samples, self.rewards) if r is not None]

    @property
    def values(self) -> list[float]:
        return [r for r in self.rewards if r is not None]

    def first_good_batch(self, size: int) -> tuple[int, int] | None:
        for start in range(0, len(self.samples), size):
            end = min(start + size, len(self.samples))
            if all(r is not None for r in self.rewards[start:end]):
                return start, end
        return None


def call(source: RewardSource, samples: list[Sample]) -> RewardBatch:
    return source.score([s.query for s in samples], [s.prompt for s in samples], [s.label for s in samples])


Progress = Callable[[str, int, int], None]  # (run name, samples done, samples in the run)


def score_run(source: RewardSource, samples: list[Sample], batch_size: int, name: str, timeout: float,
              progress: Progress | None = None) -> Run:
    """Score `samples` in batches; stop after a timeout (every later call would wait as long again)."""
    run = Run(name, samples, rewards=[None] * len(samples))
    located = 0
    for start in range(0, len(samples), batch_size):
        if progress is not None:
            progress(name, start, len(samples))
        end = min(start + batch_size, len(samples))
        batch = samples[start:end]
        t0 = time.perf_counter()
        try:
            result = call(source, batch)
        except RewardError as exc:
            seconds = time.perf_counter() - t0
            fault = _fault(exc, run.name, (start, end), seconds, timeout)
            if fault.kind == "timeout":
                run.faults.append(fault)
                run.timed_out = True
                run.unscored = len(samples) - end
                break
            run.call_seconds.append((len(batch), seconds))
            if fault.sample is None and fault.kind in LOCATABLE and located < LOCATE_BATCHES and len(batch) > 1:
                located += 1
                run.faults.extend(_locate(source, batch, fault, timeout) or [fault])
            else:
                run.faults.append(fault)
            continue
        run.call_seconds.append((len(batch), time.perf_counter() - t0))
        for i, reward in enumerate(result.rewards):
            run.rewards[start + i] = reward
        for key, values in result.extra_logs.items():
            column = run.extra_logs.setdefault(key, [None] * len(samples))
            column[start:end] = values
    return run


def _fault(exc: RewardError, run: str, batch: tuple[int, int], seconds: float, timeout: float) -> Fault:
    kind = getattr(exc, "kind", "error")
    if kind in ("error", "unreachable") and seconds >= timeout:
        kind = "timeout"  # a client that gave up after its own timeouts and retries
    index = exc.index
    message = exc.problem if hasattr(exc, "problem") else str(exc)
    return Fault(
        kind=kind, message=message, run=run, batch=batch,
        sample=None if index is None else batch[0] + index, traceback=exc.user_traceback,
    )


def _locate(source: RewardSource, batch: list[Sample], fault: Fault, timeout: float) -> list[Fault]:
    """Re-score a failing batch one sample at a time: the faults of the samples that fail alone (empty if none)."""
    found = []
    for sample in batch:
        t0 = time.perf_counter()
        try:
            call(source, [sample])
        except RewardError as exc:
            single = _fault(exc, fault.run, fault.batch, time.perf_counter() - t0, timeout)
            single.sample = sample.index
            found.append(single)
            if single.kind == "timeout":
                break
    return found


def sample_of(run: Run, fault: Fault) -> dict[str, Any]:
    """What the report shows of a fault: where, the input, the label and the user's traceback."""
    out: dict[str, Any] = {"run": fault.run, "kind": fault.kind, "message": fault.message,
                           "batch": list(fault.batch)}
    if fault.sample is not None:
        s = run.samples[fault.sample]
        out.update(sample=s.index, row=s.row, label=s.label, response=s.response, query=s.query)
    if fault.traceback:
        out["traceback"] = fault.traceback
    return out
