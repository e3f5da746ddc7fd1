"""Figures of one level, named as `vllm bench serve` names them where it has a name for them.

vLLM's names kept: completed, failed, duration, request_throughput, total_token_throughput (here: input tokens
only, there is no output), mean/median/std/p<N>_e2el_ms (end-to-end latency of answered requests). Added:
total_samples and sample_throughput (texts scored per second: requests x --batch-size), error_rate, errors by
kind, and client_cpu (CPU cores the bench-rm process used over the run).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

from rlhfctl.bench.loadgen import LevelRun

CLIENT_BOUND_CPU = 0.8  # of one core: above it the load generator may be what limits the figures


@dataclass
class LevelStats:
    concurrency: int
    request_rate: Optional[float]  # Poisson arrivals per second; None: closed loop
    completed: int
    failed: int
    error_rate: float
    duration: float
    total_samples: int
    total_input_tokens: int
    request_throughput: float
    sample_throughput: float
    total_token_throughput: float
    mean_e2el_ms: Optional[float]
    median_e2el_ms: Optional[float]
    std_e2el_ms: Optional[float]
    p90_e2el_ms: Optional[float]
    p99_e2el_ms: Optional[float]
    max_e2el_ms: Optional[float]
    errors: dict[str, int]
    error_examples: dict[str, str]
    client_cpu: float
    connections: Optional[int]
    resent: Optional[int] = None  # requests re-sent on a fresh connection after a reused one closed (keep-alive race)
    replicas: Optional[list[dict[str, Any]]] = None  # --url URL1,URL2: requests, samples and share of each

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summarize(run: LevelRun) -> LevelStats:
    """Throughputs count answered requests over the measured wall time; latencies are those of answered ones."""
    duration = max(run.duration, 1e-9)
    lat_ms = np.asarray(run.latencies, dtype=float) * 1000.0
    has = lat_ms.size > 0

    def stat(fn: Any) -> Optional[float]:
        return float(fn(lat_ms)) if has else None

    return LevelStats(
        concurrency=run.concurrency,
        request_rate=run.request_rate,
        completed=run.completed,
        failed=run.failed,
        error_rate=run.failed / run.sent if run.sent else 0.0,
        duration=run.duration,
        total_samples=run.samples,
        total_input_tokens=run.tokens,
        request_throughput=run.completed / duration,
        sample_throughput=run.samples / duration,
        total_token_throughput=run.tokens / duration,
        mean_e2el_ms=stat(np.mean),
        median_e2el_ms=stat(np.median),
        std_e2el_ms=stat(np.std),
        p90_e2el_ms=stat(lambda a: np.percentile(a, 90)),
        p99_e2el_ms=stat(lambda a: np.percentile(a, 99)),
        max_e2el_ms=stat(np.max),
        errors=dict(sorted(run.errors.items())),
        error_examples=dict(sorted(run.examples.items())),
        client_cpu=run.cpu / duration,
        connections=run.info.get("connections"),
        resent=run.info.get("resent"),
        replicas=run.info.get("replicas"),
    )


def client_bound_warning(level: LevelStats) -> Optional[str]:
    """A warning when the load generator spent most of a core: then the server may have more to give."""
    if level.client_cpu <= CLIENT_BOUND_CPU:
        return None
    return (f"concurrency {level.concurrency}: bench-rm itself used {level.client_cpu:.0%} of a CPU core, so its "
            "figures there may be the load generator's limit rather than the server's (run bench-rm on another "
            "machine, or compare with wrk: benchmarks/bench_client.py)")
