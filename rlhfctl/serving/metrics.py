"""Prometheus metrics of one reward server: what an operator needs to size batching and replicas.

Each app gets its own registry, so several servers in one process (tests, bench-rm in-process) do not mix figures.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class ServerMetrics:
    """Requests by status, samples scored, forward batch sizes and tokens, queue depth, latencies."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("rlhfctl_requests", "Reward requests answered, by HTTP status.", ["status"], registry=r)
        self.samples = Counter("rlhfctl_samples", "Queries scored.", registry=r)
        self.latency = Histogram("rlhfctl_request_latency_seconds", "Time from request received to answer ready.",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("rlhfctl_queue_depth", "Queries admitted and not yet answered.", registry=r)
        self.batch_size = Histogram("rlhfctl_batch_size", "Texts per forward pass (or per reward_func call).",
                                    buckets=_SIZE_BUCKETS, registry=r)
        self.batch_tokens = Histogram("rlhfctl_batch_tokens", "Padded tokens per forward pass.",
                                      buckets=_TOKEN_BUCKETS, registry=r)
        self.judge_unparsed = Counter("rlhfctl_judge_unparsed", "Judge answers with no number in them, scored "
                                      "--judge-fallback-reward (--judge-mode generate).", registry=r)
        self.forward_seconds = Histogram("rlhfctl_forward_seconds", "Time of one forward pass or reward_func call.",
                                         buckets=_LATENCY_BUCKETS, registry=r)

    def observe_batch(self, texts: int, padded_tokens: int | None, seconds: float) -> None:
        """One forward pass (or reward_func call) of `texts` texts; padded_tokens is None for a reward function."""
        self.batch_size.observe(texts)
        if padded_tokens is not None:
            self.batch_tokens.observe(padded_tokens)
        self.forward_seconds.observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
