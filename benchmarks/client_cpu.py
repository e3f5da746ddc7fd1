"""CPU per request of bench-rm's load generator against httpx, on the same trivial local endpoint. One JSON line.

Both clients run through the same closed loop (rlhfctl/bench/loadgen.py's run_level: the same requests, warm-up,
answer check and CPU clock around the measured part only); only the HTTP client differs: bench-rm's keep-alive
HttpTarget (rlhfctl/bench/http.py) or an httpx.AsyncClient with a keep-alive pool of --concurrency connections
(httpx is what rlhfctl's reward clients use). The endpoint is bench_client.py's raw ASGI app on 127.0.0.1. Each
run is a fresh process; on a machine with two or more cores the endpoint is pinned to one core and the clients to
another. Runs alternate in ABBA order and the median of --repeats runs per client is kept; other load on the
machine disturbs CPU time per request far less than requests/s, but it is still noisy on shared cores.

    python benchmarks/client_cpu.py [--requests 2000] [--concurrency 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

from bench_client import ROOT, cores, first_request, pinned, start_endpoint

CLIENTS = ("loadgen", "httpx")


class HttpxTarget:
    """The loadgen's Target interface over httpx.AsyncClient: the same answer check as HttpTarget."""

    local_cpu = False

    def __init__(self, url: str, concurrency: int, timeout: float = 60.0) -> None:
        self.name = url
        self.url = url
        self.concurrency = concurrency
        self.timeout = timeout
        self._client: Any = None

    async def open(self) -> None:
        import httpx

        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        self._client = httpx.AsyncClient(timeout=self.timeout, limits=limits)

    async def send(self, request: Any) -> None:
        from rlhfctl.bench.targets import RequestFailed, check_answer

        answer = await self._client.post(self.url, content=request.body,
                                         headers={"content-type": "application/json"})
        if answer.status_code != 200:
            raise RequestFailed(f"http_{answer.status_code}", answer.text[:300])
        check_answer(answer.json(), request.size)

    async def close(self) -> dict[str, Any]:
        await self._client.aclose()
        return {}


def measure(client: str, url: str, requests: int, concurrency: int) -> dict[str, Any]:
    """One run of one client in this process: CPU microseconds per answered request, requests/s."""
    sys.path.insert(0, str(ROOT))
    from rlhfctl.bench.loadgen import run_async, run_level
    from rlhfctl.bench.targets import HttpTarget
    from rlhfctl.bench.workload import Workload

    target = HttpTarget(url, api_key=None, timeout=60.0) if client == "loadgen" else HttpxTarget(url, concurrency)
    workload = Workload([first_request()], "one 32-word text")
    run = run_async(run_level(target, workload, concurrency=concurrency, num_requests=requests,
                              warmup=4 * concurrency))
    return {"cpu_us": 1e6 * run.cpu / max(run.completed, 1), "rps": run.completed / run.duration,
            "completed": run.completed, "failed": run.failed}


def run_child(client: str, url: str, args: argparse.Namespace, cpus: set[int] | None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--measure", client, "--url", url, "--requests", str(args.requests),
               "--concurrency", str(args.concurrency)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, preexec_fn=pinned(cpus))
    if done.returncode != 0:
        raise SystemExit(f"{client} run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per run (default 2000)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per client; the median is kept (default 3)")
    parser.add_argument("--measure", choices=CLIENTS, help=argparse.SUPPRESS)  # internal: one run of one client
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.requests, args.concurrency, args.repeats) < 1:
        parser.error("--requests, --concurrency and --repeats must be at least 1")
    if args.measure:
        print(json.dumps(measure(args.measure, args.url, args.requests, args.concurrency)))
        return 0
    server_cpus, tool_cpus = cores()
    load_at_start = os.getloadavg()[0]
    endpoint, url = start_endpoint(server_cpus)
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CLIENTS}
    try:
        for i in range(args.repeats):  # ABBA: a drift in the machine's load hits both clients alike
            for client in (CLIENTS if i % 2 == 0 else CLIENTS[::-1]):
                runs[client].append(run_child(client, url, args, tool_cpus))
    finally:
        endpoint.terminate()
        endpoint.wait(10)
    cpu = {c: round(statistics.median(r["cpu_us"] for r in runs[c]), 1) for c in CLIENTS}
    print(json.dumps({
        "benchmark": "client_cpu", "endpoint": "raw ASGI app under uvicorn, fixed answer (bench_client.py)",
        "requests": args.requests, "concurrency": args.concurrency, "repeats": args.repeats,
        "cpu_us_per_request": cpu, "httpx_over_loadgen": round(cpu["httpx"] / cpu["loadgen"], 1),
        "rps": {c: round(statistics.median(r["rps"] for r in runs[c])) for c in CLIENTS},
        "failed": {c: sum(r["failed"] for r in runs[c]) for c in CLIENTS},
        "runs_cpu_us": {c: [round(r["cpu_us"], 1) for r in runs[c]] for c in CLIENTS},
        "httpx_version": _version("httpx"), "event_loop": "uvloop" if _version("uvloop") else "asyncio",
        "endpoint_cpus": sorted(server_cpus or []), "client_cpus": sorted(tool_cpus or []),
        "load_average_1m": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)},
    }), flush=True)
    return 0


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
