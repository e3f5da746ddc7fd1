"""The load generator: drive a target at one concurrency level and record every request's outcome.

Closed loop (default): `concurrency` workers each send a request, wait for its answer, send the next: the
server's capacity at that many requests in flight. Open loop (`request_rate`): arrivals follow a Poisson process
at that rate (seeded), at most `concurrency` in flight; a request's latency counts from when it is sent, as
`vllm bench serve` counts it. Warm-up requests go first and are not recorded. The clock and the process's CPU time
are read around the measured part only, so the figures can say whether the client itself was the limit.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

from rlhfctl.bench.targets import RequestFailed, Target
from rlhfctl.bench.workload import Request, Workload

TICK_S = 0.1  # how often the progress callback sees the counters


@dataclass
class LevelRun:
    """Raw outcome of one level: latencies of answered requests (seconds), failures by kind."""

    concurrency: int
    request_rate: Optional[float] = None
    latencies: list[float] = field(default_factory=list)
    samples: int = 0
    tokens: int = 0
    errors: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # kind -> first message of that kind
    duration: float = 0.0  # seconds from the first request sent to the last answer
    cpu: float = 0.0  # CPU seconds this process used meanwhile
    info: dict[str, Any] = field(default_factory=dict)  # what the target reports (connections opened)

    @property
    def completed(self) -> int:
        return len(self.latencies)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def sent(self) -> int:
        return self.completed + self.failed

    def ok(self, latency: float, request: Request) -> None:
        self.latencies.append(latency)
        self.samples += request.size
        self.tokens += request.tokens

    def fail(self, exc: RequestFailed) -> None:
        self.errors[exc.kind] += 1
        self.examples.setdefault(exc.kind, str(exc))


async def _one(target: Target, request: Request, run: LevelRun) -> None:
    start = time.perf_counter()
    try:
        await target.send(request)
    except RequestFailed as exc:
        run.fail(exc)
    else:
        run.ok(time.perf_counter() - start, request)


async def _closed_loop(target: Target, workload: Workload, run: LevelRun, concurrency: int, first: int,
                       count: Optional[int], deadline: Optional[float]) -> None:
    indices = itertools.count(first)
    end = None if count is None else first + count

    async def worker() -> None:
        while True:
            i = next(indices)
            if (end is not None and i >= end) or (deadline is not None and time.perf_counter() >= deadline):
                return
            await _one(target, workload[i], run)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _open_loop(target: Target, workload: Workload, run: LevelRun, concurrency: int, first: int,
                     count: Optional[int], deadline: Optional[float], rate: float, seed: int) -> None:
    rng = random.Random(seed)
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task] = set()

    async def send(request: Request) -> None:
        try:
            await _one(target, request, run)
        finally:
            slots.release()

    arrival = time.perf_counter()
    for i in itertools.count(first):
        if (count is not None and i >= first + count) or (deadline is not None and arrival >= deadline):
            break
        delay = arrival - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        task = asyncio.create_task(send(workload[i]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        arrival += rng.expovariate(rate)
    if tasks:
        await asyncio.gather(*tasks)


async def _ticker(run: LevelRun, on_tick: Callable[[LevelRun], None]) -> None:
    while True:
        await asyncio.sleep(TICK_S)
        on_tick(run)


async def run_level(target: Target, workload: Workload, *, concurrency: int, num_requests: int,
                    duration: Optional[float] = None, request_rate: Optional[float] = None, warmup: int = 0,
                    seed: int = 0, on_tick: Optional[Callable[[LevelRun], None]] = None) -> LevelRun:
    """Measure one level: `num_requests` requests, or as many as `duration` seconds allow (then the requests in
    flight are answered and counted: the duration runs to the last answer)."""
    await target.open()
    try:
        if warmup:
            await _closed_loop(target, workload, LevelRun(concurrency), concurrency, 0, warmup, None)
        run = LevelRun(concurrency, request_rate)
        count = None if duration is not None else num_requests
        ticker = asyncio.create_task(_ticker(run, on_tick)) if on_tick else None
        start, cpu = time.perf_counter(), time.process_time()
        deadline = start + duration if duration is not None else None
        if request_rate is None:
            await _closed_loop(target, workload, run, concurrency, warmup, count, deadline)
        else:
            await _open_loop(target, workload, run, concurrency, warmup, count, deadline, request_rate, seed)
        run.duration = time.perf_counter() - start
        run.cpu = time.process_time() - cpu
        if ticker is not None:
            ticker.cancel()
            on_tick(run)  # type: ignore[misc]
    finally:
        info = await target.close()
    run.info = info
    return run


def run_async(main: Awaitable[Any]) -> Any:
    """Run the load generator's event loop: uvloop where installed (less CPU per request), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        uvloop = None
    runner = getattr(uvloop, "run", None) or asyncio.run  # uvloop.run: uvloop 0.18 and later
    return runner(main)  # type: ignore[arg-type]
