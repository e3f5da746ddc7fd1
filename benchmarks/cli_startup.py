"""Wall time of `rlhfctl --help` and `rlhfctl <cmd> --help` in fresh processes (target: under 1 s each).

Prints one JSON line: the median over --repeats runs per command, in seconds, and the heavy modules imported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

COMMANDS = [[], ["serve-rm"], ["train-ppo"], ["check-reward"], ["bench-rm"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    figures = {}
    for command in COMMANDS:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "rlhfctl", *command, "--help"], capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        figures[" ".join(["rlhfctl", *command, "--help"])] = round(statistics.median(times), 3)
    probe = ("import sys; from rlhfctl.cli.app import main\ntry: main(['train-ppo', '--help'])\nexcept SystemExit: pass\n"
             "print(','.join(m for m in ('torch','transformers','ray','deepspeed','vllm','datasets') if m in sys.modules), "
             "file=sys.stderr)")
    stderr = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stderr.strip()
    heavy = [m for m in stderr.splitlines()[-1].split(",") if m] if stderr else []
    print(json.dumps({"benchmark": "cli_startup", "median_wall_s": figures, "heavy_modules_imported": heavy}))


if __name__ == "__main__":
    main()
