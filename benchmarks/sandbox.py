"""What the code sandbox costs per sample (issue 25, point 3): samples/s on a trivial program.

Scores --samples responses that each print the sum of two numbers, against one stdin/stdout test each, through
SandboxReward as train-ppo, serve-rm and check-reward run it (a fresh user, network, mount and PID namespace, a
folder and a harness per sample), with --workers samples at once; once more with one assert test per sample. The
figure is the machinery (the program does nothing), so it is the overhead a real test suite adds to. Also the time
to find that isolation works at start. Prints one JSON line.

    python benchmarks/sandbox.py [--samples 40] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from rlhfctl.rewards.isolation import detect
from rlhfctl.rewards.sandbox import SandboxReward

PROGRAM = "a, b = map(int, input().split())\nprint(a + b)\n"
IO_LABEL = json.dumps([{"input": "2 3\n", "output": "5\n"}])
ASSERT_PROGRAM = "def add(a, b):\n    return a + b\n"
ASSERT_LABEL = "assert add(2, 3) == 5"


def rate(sandbox: SandboxReward, program: str, label: str, samples: int) -> dict[str, float]:
    started = time.perf_counter()
    batch = sandbox.score([program] * samples, [""] * samples, [label] * samples)
    took = time.perf_counter() - started
    assert batch.rewards == [1.0] * samples, batch.extra_logs
    return {"samples_per_s": round(samples / took, 2), "ms_per_sample_per_worker": round(took / samples * 1e3 *
                                                                                          sandbox.workers, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=40, help="samples per measurement")
    parser.add_argument("--workers", type=int, default=2, help="samples run at once (--sandbox-workers)")
    parser.add_argument("--unsafe", action="store_true", help="measure without isolation (--sandbox-unsafe)")
    args = parser.parse_args()
    if args.samples < 1 or args.workers < 1:
        parser.error("--samples and --workers must be at least 1")
    started = time.perf_counter()
    isolation = detect(args.unsafe)
    detect_s = time.perf_counter() - started
    sandbox = SandboxReward(workers=args.workers, isolation=isolation)
    try:
        rate(sandbox, PROGRAM, IO_LABEL, args.workers)  # warm the page cache
        out = {"benchmark": "sandbox", "isolated": isolation.isolated, "python": isolation.python,
               "workers": args.workers, "samples": args.samples, "cpus": os.cpu_count(),
               "detect_s": round(detect_s, 3), "stdin_stdout_test": rate(sandbox, PROGRAM, IO_LABEL, args.samples),
               "assert_test": rate(sandbox, ASSERT_PROGRAM, ASSERT_LABEL, args.samples)}
    finally:
        sandbox.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
