"""Prometheus metrics of one reward server: what an operator needs to size batching and replicas.

Each app gets its own registry, so several servers in one process (tests, bench-rm in-process) do not mix figures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from rlhfctl.rewards.replicas import ReplicaState

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

    def watch_replicas(self, states: Callable[[], list[ReplicaState]]) -> None:
        """Export the replicas a served source fans out to (--reward NAME=URL1,URL2), read at each scrape."""
        self.registry.register(_ReplicaCollector(states))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _ReplicaCollector(Collector):
    """Per replica, labelled by --reward term and URL: up, requests in flight, chunks and samples answered, and
    the times it was taken out."""

    def __init__(self, states: Callable[[], list[ReplicaState]]) -> None:
        self.states = states

    def collect(self) -> Iterator[Metric]:
        labels = ["reward", "replica"]
        up = GaugeMetricFamily("rlhfctl_replica_up", "1 while the replica takes chunks, 0 while it is out.",
                               labels=labels)
        inflight = GaugeMetricFamily("rlhfctl_replica_inflight", "Requests in flight to the replica.", labels=labels)
        chunks = CounterMetricFamily("rlhfctl_replica_chunks", "Chunks the replica answered.", labels=labels)
        samples = CounterMetricFamily("rlhfctl_replica_samples", "Samples the replica scored.", labels=labels)
        failures = CounterMetricFamily("rlhfctl_replica_failures", "Requests to the replica that failed (refused, "
                                       "timed out or 5xx) and went to another.", labels=labels)
        for state in self.states():
            key = [state.reward, state.url]
            up.add_metric(key, float(state.up))
            inflight.add_metric(key, state.inflight)
            chunks.add_metric(key, state.chunks)
            samples.add_metric(key, state.samples)
            failures.add_metric(key, state.failures)
        yield from (up, inflight, chunks, samples, failures)
