"""Time of tests/e2e/test_cluster_job.py (`ray job submit` of train-ppo against a local cluster's job server): the
seconds it adds to the suite, and where they go (the cluster's start, each job, the stop).

Runs pytest on that file in a fresh process (PYTHONPATH and RAY_AUTH_MODE as the tests need) and prints one JSON
line: the wall time, the outcome counts and each phase's seconds from `--durations`. Timings on a shared machine
are noisy; run it when the machine is quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASE = re.compile(r"^([\d.]+)s (setup|call|teardown)\s+tests/e2e/test_cluster_job\.py::(\S+)$", re.MULTILINE)
OUTCOME = re.compile(r"(\d+) (passed|failed|skipped|error)")


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0",
                           "--durations-min=0.5", "tests/e2e/test_cluster_job.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    phases = {f"{test} {phase}": float(seconds) for seconds, phase, test in PHASE.findall(done.stdout)}
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
    print(json.dumps({"benchmark": "cluster_job", "wall_s": round(wall, 1),
                      "outcomes": {kind: int(n) for n, kind in OUTCOME.findall(summary)},
                      "pytest_s": round(sum(phases.values()), 1), "phases_s": phases}))


if __name__ == "__main__":
    main()
