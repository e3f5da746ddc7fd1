"""bench-rm against several replicas of one reward (`--url URL1,URL2`): each request goes to the replica with the
fewest requests in flight, as train-ppo's reward client sends its chunks, and each replica's share is reported.

A failed request is measured as a failure (bench-rm shows what the servers do); it is not sent again elsewhere.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

from rlhfctl.bench.targets import HttpTarget
from rlhfctl.bench.workload import Request


class ReplicasTarget:
    """Several HttpTargets as one: least in flight per request (ties rotate); requests and samples per replica."""

    local_cpu = False

    def __init__(self, replicas: Sequence[HttpTarget]) -> None:
        self.replicas = list(replicas)
        self.name = ", ".join(r.name for r in self.replicas)
        self._turn = itertools.count()
        self._reset()

    def _reset(self) -> None:
        n = len(self.replicas)
        self._inflight, self._requests, self._samples = [0] * n, [0] * n, [0] * n

    def probe(self) -> None:
        for replica in self.replicas:
            replica.probe()

    async def open(self) -> None:
        self._reset()
        for replica in self.replicas:
            await replica.open()

    async def send(self, request: Request) -> None:
        n, turn = len(self.replicas), next(self._turn)
        i = min(range(n), key=lambda k: (self._inflight[k], (k - turn) % n))
        self._inflight[i] += 1
        try:
            await self.replicas[i].send(request)
        finally:
            self._inflight[i] -= 1
        self._requests[i] += 1
        self._samples[i] += request.size

    async def close(self) -> dict[str, Any]:
        infos = [await replica.close() for replica in self.replicas]
        total = sum(self._samples) or 1
        return {"connections": sum(info["connections"] for info in infos),
                "resent": sum(info["resent"] for info in infos),
                "replicas": [{"url": r.name, "requests": req, "samples": s, "share": round(s / total, 4)}
                             for r, req, s in zip(self.replicas, self._requests, self._samples)]}
