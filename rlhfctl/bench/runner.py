"""bench-rm as a library call: open the target, sweep the concurrency levels, return every figure.

`benchmark(cfg)` is what the CLI runs; it prints nothing itself (an optional observer sees progress), so tests and
scripts get the same BenchResult the table and the JSON are made from.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Optional, Protocol

from rlhfctl.bench.loadgen import LevelRun, run_async, run_level
from rlhfctl.bench.stats import LevelStats, client_bound_warning, summarize
from rlhfctl.bench.replicas import ReplicasTarget
from rlhfctl.bench.targets import HttpTarget, InProcessTarget, Target
from rlhfctl.bench.workload import MAX_TEXTS, build_workload

if TYPE_CHECKING:
    from rlhfctl.config import BenchRMConfig


class Observer(Protocol):
    """Sees a run as it goes (the CLI's progress bar)."""

    def level_started(self, concurrency: int, num_requests: Optional[int], duration: Optional[float]) -> None: ...

    def tick(self, run: LevelRun) -> None: ...


@dataclass
class BenchResult:
    target: str
    mode: str  # "url", "serve-rm" (started for the run) or "in-process"
    workload: str
    settings: dict[str, Any]
    environment: dict[str, Any]
    levels: list[LevelStats] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "mode": self.mode, "workload": self.workload, "settings": self.settings,
                "environment": self.environment, "levels": [lv.to_dict() for lv in self.levels],
                "warnings": self.warnings}

    def over_error_rate(self, limit: float) -> list[LevelStats]:
        """Levels whose share of failed requests exceeds `limit` (what --max-error-rate turns into exit 1)."""
        return [lv for lv in self.levels if lv.error_rate > limit]


def _event_loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


@contextmanager
def open_target(cfg: BenchRMConfig) -> Iterator[tuple[Target, str, Optional[int]]]:
    """(target, mode, torch threads of the scorer where known), closed or stopped on the way out."""
    if cfg.url is not None:
        target = _url_target(cfg)
        target.probe()
        yield target, "url", None
        return
    from rlhfctl.bench.spawn import SpawnedServer
    from rlhfctl.serving.threads import default_num_threads

    serve_cfg = cfg.serve_rm_config()
    threads = (serve_cfg.num_threads or default_num_threads()) if serve_cfg.reward_pretrain else None
    if not cfg.in_process:
        from rlhfctl.config import AuthArgs, dump_config

        with SpawnedServer(dump_config(serve_cfg), serve_cfg.slice(AuthArgs)) as url:
            yield HttpTarget(url, api_key=cfg.api_key, timeout=cfg.rm_timeout), "serve-rm", threads
        return
    from rlhfctl.config import RewardExecArgs, ServerArgs
    from rlhfctl.serving.batcher import make_scorer
    from rlhfctl.serving.metrics import ServerMetrics
    from rlhfctl.serving.sources import open_source
    from rlhfctl.serving.threads import configure_threads

    if serve_cfg.reward_pretrain:
        threads = configure_threads(serve_cfg.num_threads)
    source = open_source(serve_cfg)
    scorer = make_scorer(source, ServerMetrics(), serve_cfg.slice(ServerArgs), serve_cfg.slice(RewardExecArgs))
    scorer.start()
    try:
        yield InProcessTarget(scorer, source.name), "in-process", threads
    finally:
        scorer.stop()
        source.close()


def _url_target(cfg: BenchRMConfig) -> HttpTarget | ReplicasTarget:
    """--url: one server, or several (comma-separated) as replicas of one reward."""
    from rlhfctl.rewards.remote import parse_urls

    urls = parse_urls(cfg.url or "")
    targets = [HttpTarget(url, api_key=cfg.api_key, timeout=cfg.rm_timeout) for url in urls]
    return targets[0] if len(targets) == 1 else ReplicasTarget(targets)


def benchmark(cfg: BenchRMConfig, observer: Optional[Observer] = None) -> BenchResult:
    """Run every --concurrency level against the target of `cfg` (a BenchRMConfig)."""
    from rlhfctl.config import BenchArgs, DataArgs, RewardModelArgs, RunArgs
    from rlhfctl.config.hub_ids import resolve_fields

    # Once, here: the workload's tokenizer, an in-process scorer and a spawned serve-rm all get the local folder.
    cfg = resolve_fields(cfg, ["reward_pretrain"])
    needed = cfg.warmup + cfg.num_requests if cfg.duration is None else MAX_TEXTS
    workload = build_workload(cfg.slice(BenchArgs), cfg.slice(DataArgs), cfg.slice(RunArgs), cfg.slice(RewardModelArgs),
                              needed)  # before any server starts: bad data fails fast
    settings = {"texts_per_request": cfg.texts_per_request, "concurrency": list(cfg.concurrency),
                "num_requests": None if cfg.duration is not None else cfg.num_requests, "duration": cfg.duration,
                "request_rate": cfg.request_rate, "warmup": cfg.warmup, "seed": cfg.seed, "timeout": cfg.rm_timeout}
    with open_target(cfg) as (target, mode, threads):
        result = BenchResult(
            target=target.name, mode=mode, workload=workload.description, settings=settings,
            environment={"event_loop": _event_loop(), "cpu_cores": os.cpu_count(), "scorer_torch_threads": threads,
                         "tokens_counted_as": "whitespace-separated words"},
        )
        result.levels = run_async(_sweep(cfg, target, workload, observer))
    if mode != "in-process":  # in-process, this process's CPU time includes the scoring itself
        result.warnings = [w for w in map(client_bound_warning, result.levels) if w]
    return result


async def _sweep(cfg: BenchRMConfig, target: Target, workload: Any, observer: Optional[Observer]) -> list[LevelStats]:
    levels = []
    for concurrency in cfg.concurrency:
        if observer is not None:
            observer.level_started(concurrency, None if cfg.duration else cfg.num_requests, cfg.duration)
        run = await run_level(target, workload, concurrency=concurrency, num_requests=cfg.num_requests,
                              duration=cfg.duration, request_rate=cfg.request_rate, warmup=cfg.warmup,
                              seed=cfg.seed, on_tick=observer.tick if observer is not None else None)
        levels.append(summarize(run))
    return levels
