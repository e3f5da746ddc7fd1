"""Does serve-rm answer every request under sustained load with the cores contended? (issue 12, point 8)

Starts serve-rm (a subprocess on a loopback port, as `bench-rm --reward-pretrain/--reward-func` starts it) on a tiny
reward model or a reward_func.py, starts --hogs CPU-hungry processes beside it (pure-Python busy loops standing in
for a training run on the same cores), and sends --requests single-text requests at --concurrency with bench-rm's
own load generator (closed loop, keep-alive connections reused). Every request must be answered: the JSON line
(last line of stdout) gives requests sent, answered, failed by kind with an example, and the wall time; the exit
status is 1 when any request was lost.

    python benchmarks/serve_rm_soak.py [--requests 20000] [--concurrency 64] [--hogs 1] [--source model|func]

Traffic goes to 127.0.0.1 only; the run is bounded by --requests and, per request, by --timeout seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlhfctl.bench.runner import benchmark
from rlhfctl.config import resolve

REWARD_FUNC = "def reward_func(queries, prompts, labels):\n    return [float(len(q) % 7) for q in queries]\n"
HOG = ("import sys, time\nend = time.monotonic() + float(sys.argv[1])\n"
       "while time.monotonic() < end:\n    pass\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--hogs", type=int, default=1, help="CPU-hungry processes running beside the server")
    parser.add_argument("--source", choices=("model", "func"), default="model")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one request may take")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="the hogs stop after this long at most")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rlhfctl-soak-") as tmp:
        options = {"num_requests": args.requests, "concurrency": [args.concurrency], "warmup": 16,
                   "batch_size": 1, "rm_timeout": args.timeout, "rm_max_retries": 0}
        if args.source == "model":
            from rlhfctl.models.tiny import make_tiny_reward_model

            options["reward_pretrain"] = str(make_tiny_reward_model(Path(tmp) / "rm"))
        else:
            path = Path(tmp) / "reward_func.py"
            path.write_text(REWARD_FUNC)
            options["reward_func"] = str(path)
        cfg = resolve("bench-rm", options)
        hogs = [subprocess.Popen([sys.executable, "-c", HOG, str(args.max_seconds)]) for _ in range(args.hogs)]
        started = time.perf_counter()
        try:
            result = benchmark(cfg)
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
    level = result.levels[0]
    sent = level.completed + level.failed
    report = {"benchmark": "serve_rm_soak", "source": args.source, "requests": args.requests,
              "concurrency": args.concurrency, "hogs": args.hogs, "sent": sent, "answered": level.completed,
              "errors": level.errors, "error_examples": level.error_examples, "lost": args.requests - level.completed,
              "connections": level.connections, "resent": level.resent,
              "request_throughput": round(level.request_throughput, 1),
              "p99_ms": level.p99_e2el_ms, "max_ms": level.max_e2el_ms,
              "wall_s": round(time.perf_counter() - started, 1)}
    print(json.dumps(report))
    return 0 if report["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
