"""What running a reward_func.py in worker processes costs per call (issue 12, point 7).

Times a trivial reward function (so the figure is the calling machinery, not the function) called on batches of 1
and 16 queries three ways: in the calling thread (FunctionReward, no timeout), in a thread per call (FunctionReward
with a timeout: how rlhfctl ran it before, and the only way a thread-based timeout works), and in a worker process
(FunctionPool with --reward-timeout: how train-ppo, serve-rm and check-reward run it now). Also the start-up of a
pool (one worker loading the file) and the time to replace a worker killed at its timeout. Medians of --calls calls.
Prints one JSON line.

    python benchmarks/reward_pool_overhead.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from rlhfctl.rewards.contract import RewardFault
from rlhfctl.rewards.function import FunctionReward
from rlhfctl.rewards.pool import FunctionPool

SOURCE = ("import time\ndef reward_func(queries, prompts, labels):\n"
          "    if queries[0] == 'hang':\n        time.sleep(1000)\n    return [1.0] * len(queries)\n")


def per_call_us(score, n: int, calls: int) -> float:
    queries = [f"query {i} with some words" for i in range(n)]
    for _ in range(20):
        score(queries, queries, queries)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        score(queries, queries, queries)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1e6, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reward_func.py"
        path.write_text(SOURCE)
        out: dict = {"benchmark": "reward_pool_overhead", "calls": args.calls}
        in_thread, thread_per_call = FunctionReward(path), FunctionReward(path, timeout=60.0)
        started = time.perf_counter()
        pool = FunctionPool(path, timeout=60.0)
        out["pool_start_s"] = round(time.perf_counter() - started, 3)
        for n in (1, 16):
            out[f"batch_{n}"] = {
                "calling_thread_us": per_call_us(in_thread.score, n, args.calls),
                "thread_per_call_us": per_call_us(thread_per_call.score, n, args.calls),
                "worker_process_us": per_call_us(pool.score, n, args.calls),
            }
        pool.close()
        with FunctionPool(path, timeout=0.2) as short:
            try:
                short.score(["hang"], [""], [""])
            except RewardFault:
                pass
            started = time.perf_counter()
            short.score(["x"], [""], [""])  # waits for the replacement worker to load
            out["replace_after_timeout_s"] = round(time.perf_counter() - started, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
