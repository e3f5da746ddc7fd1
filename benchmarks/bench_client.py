"""Is bench-rm's load generator honest? Its request rate against wrk's on the same trivial /get_reward endpoint.

The endpoint is a raw ASGI app under uvicorn that answers every POST with a fixed one-reward body, so the
endpoint's own cost is as low as a Python server gets; whatever limits the rate is the endpoint or the load tool.
wrk (C, from Debian: `apt-get install wrk`) is the independent reference. On a machine with two or more cores the
endpoint is pinned to core 0 and each load tool to core 1, so neither tool borrows the other's core. Runs
alternate wrk / bench-rm in ABBA order and the median of --repeats runs is kept (other work on the machine adds
noise); `ratio` is bench-rm's median over wrk's, `median_pair_ratio` the median of back-to-back pairs' ratios.
Target: bench-rm within 10% of wrk (ratio >= 0.9). `cpu_us_per_request` (each tool's own CPU time per request)
shows how much headroom a tool has on its core, a figure that other load on the machine disturbs far less. Prints one JSON line; skips with a message where wrk is absent.

    python benchmarks/bench_client.py [--concurrency 8,32] [--duration 5] [--repeats 4]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from rlhfctl.net import free_port  # noqa: E402
ANSWER = b'{"rewards":[0.5],"scores":[0.5],"extra_logs":{}}'
WORDS = 32  # every request carries one text of this many words, for both tools


# ------------------------------------------------------------------------------------------ the endpoint
async def endpoint(scope: dict, receive: Any, send: Any) -> None:
    """Read the whole body, answer the fixed reward: the least work a /get_reward server can do."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]})
    await send({"type": "http.response.body", "body": ANSWER})


def serve(port: int) -> None:
    import uvicorn

    options: dict[str, Any] = {}
    for name, module in (("loop", "uvloop"), ("http", "httptools")):
        try:
            __import__(module)
            options[name] = module
        except ImportError:
            pass
    uvicorn.run(endpoint, host="127.0.0.1", port=port, log_level="warning", access_log=False, **options)


# ------------------------------------------------------------------------------------------ helpers
def cores() -> tuple[set[int] | None, set[int] | None]:
    """(endpoint cores, load tool cores): separate ones where there are two or more."""
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(available) < 2:
        return None, None
    return {available[0]}, set(available[1:2])


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pinned(cpus: set[int] | None) -> Any:
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the endpoint did not start on port {port}")


def first_request() -> Any:
    """The request bench-rm sends first with --min-tokens/--max-tokens WORDS and --seed 0 (a workload.Request)."""
    sys.path.insert(0, str(ROOT))
    from rlhfctl.bench.workload import Request, synthetic_texts

    prompt, query = synthetic_texts(1, WORDS, WORDS, seed=0)[0]
    return Request.of([query], [prompt], [""])


def request_body() -> bytes:
    """The body bench-rm sends with --min-tokens/--max-tokens WORDS and --seed 0 (first request)."""
    return first_request().body


def start_endpoint(cpus: set[int] | None) -> tuple[subprocess.Popen, str]:
    """The trivial endpoint in a child process (pinned to `cpus`) on a free loopback port; (process, URL)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], preexec_fn=pinned(cpus))
    try:
        wait_port(port)
    except BaseException:
        proc.terminate()
        raise
    return proc, f"http://127.0.0.1:{port}/get_reward"


def run_wrk(url: str, concurrency: int, duration: float, body: bytes, cpus: set[int] | None) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                     f"wrk.body = {json.dumps(body.decode())}\n")
    before = children_cpu()
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "-s", script.name,
                              url], capture_output=True, text=True, check=True, preexec_fn=pinned(cpus)).stdout
    finally:
        os.unlink(script.name)
    cpu = children_cpu() - before
    rate = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    return {"rps": rate, "non_2xx": int(bad.group(1)) if bad else 0, "cpu_us": 1e6 * cpu / max(total, 1)}


def run_bench_rm(url: str, concurrency: int, duration: float, cpus: set[int] | None) -> dict[str, Any]:
    command = [sys.executable, "-m", "rlhfctl", "bench-rm", "--url", url, "--concurrency", str(concurrency),
               "--duration", str(duration), "--warmup", str(4 * concurrency), "--min-tokens", str(WORDS),
               "--max-tokens", str(WORDS), "--seed", "0", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, preexec_fn=pinned(cpus))
    if done.returncode != 0:
        raise SystemExit(f"bench-rm failed ({done.returncode}):\n{done.stderr[-2000:]}")
    level = json.loads(done.stdout)["levels"][0]
    cpu_us = 1e6 * level["client_cpu"] * level["duration"] / max(level["completed"], 1)  # measured part only
    return {"rps": level["request_throughput"], "failed": level["failed"], "client_cpu": level["client_cpu"],
            "cpu_us": cpu_us}


# ------------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="8", help="comma-separated levels (default 8)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    parser.add_argument("--repeats", type=int, default=4, help="runs per tool and level; the median is kept")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)  # internal: be the endpoint
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if shutil.which("wrk") is None:
        print(json.dumps({"benchmark": "bench_client", "skipped": "wrk is not installed (Debian: apt-get install "
                          "wrk); it is the independent load tool bench-rm is compared with"}))
        return
    server_cpus, tool_cpus = cores()
    endpoint_proc, url = start_endpoint(server_cpus)
    try:
        body = request_body()
        levels = []
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            wrk_runs, bench_runs = [], []
            for i in range(args.repeats):  # ABBA order: a drift in the machine's load hits both tools alike
                order = ("wrk", "bench") if i % 2 == 0 else ("bench", "wrk")
                for tool in order:
                    if tool == "wrk":
                        wrk_runs.append(run_wrk(url, concurrency, args.duration, body, tool_cpus))
                    else:
                        bench_runs.append(run_bench_rm(url, concurrency, args.duration, tool_cpus))
            wrk_rps = statistics.median(r["rps"] for r in wrk_runs)
            bench_rps = statistics.median(r["rps"] for r in bench_runs)
            pairs = [b["rps"] / w["rps"] for w, b in zip(wrk_runs, bench_runs)]
            levels.append({
                "concurrency": concurrency, "wrk_rps": round(wrk_rps, 1), "bench_rm_rps": round(bench_rps, 1),
                "ratio": round(bench_rps / wrk_rps, 3), "median_pair_ratio": round(statistics.median(pairs), 3),
                "bench_rm_client_cpu": round(statistics.median(r["client_cpu"] for r in bench_runs), 3),
                "cpu_us_per_request": {"wrk": round(statistics.median(r["cpu_us"] for r in wrk_runs), 1),
                                       "bench_rm": round(statistics.median(r["cpu_us"] for r in bench_runs), 1)},
                "bench_rm_failed": sum(r["failed"] for r in bench_runs),
                "wrk_non_2xx": sum(r["non_2xx"] for r in wrk_runs),
                "runs": {"wrk": [round(r["rps"]) for r in wrk_runs], "bench_rm": [round(r["rps"]) for r in bench_runs]},
            })
    finally:
        endpoint_proc.terminate()
        endpoint_proc.wait(10)
    print(json.dumps({"benchmark": "bench_client", "endpoint": "raw ASGI app under uvicorn, fixed answer",
                      "body_bytes": len(body), "duration_s": args.duration, "repeats": args.repeats,
                      "endpoint_cpus": sorted(server_cpus or []), "tool_cpus": sorted(tool_cpus or []),
                      "target_ratio": 0.9, "levels": levels}))


if __name__ == "__main__":
    main()
