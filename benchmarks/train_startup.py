"""Wall time of a two-step train-ppo run (tiny policy, actor + reference + critic), from the command to its exit:
on Ray workers (a local Ray of its own) with the installed bytecode and without it, and with the roles in the
driver's process (--role-workers driver, the default where a run can). Nearly all of it is start-up.

"Without" points PYTHONPYCACHEPREFIX at an empty folder and sets PYTHONDONTWRITEBYTECODE, for the driver and, through
the Ray it starts, every worker: each process compiles torch's, transformers' and rlhfctl's sources again, as a
venv installed by uv without --compile-bytecode does on a machine with PYTHONDONTWRITEBYTECODE set. The two runs
alternate (ABCABC...) so they see the same machine load. Prints one JSON line: each mode's median seconds, the ratios
and the load average before and after.

    python benchmarks/train_startup.py [--repeats 3] [--modes bytecode,in_driver]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REWARD = "def reward_func(queries, prompts, labels, **kwargs):\n    return [float(len(q) % 3) for q in queries]\n"


def _run(work: Path, policy: Path, prompts: Path, reward: Path, env: dict[str, str], extra: list[str],
         tag: str) -> float:
    out = work / tag
    command = [sys.executable, "-m", "rlhfctl", "train-ppo", "--pretrain", str(policy), "--prompt-data", str(prompts),
               "--input-key", "input", "--label-key", "answer", "--remote-rm-url", str(reward), "--save-path",
               str(out), "--rollout-batch-size", "2", "--n-samples-per-prompt", "4", "--micro-rollout-batch-size",
               "2", "--train-batch-size", "8", "--micro-train-batch-size", "4", "--generate-max-len", "8",
               "--prompt-max-len", "64", "--max-samples", "4", *extra]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", default="bytecode,no_bytecode,in_driver", help="comma-separated, of the three")
    args = parser.parse_args()
    from rlhfctl.models.tiny import TinyArch, make_tiny_policy
    from tests.helpers import PROMPTS, write_jsonl

    work = Path(tempfile.mkdtemp(prefix="rlhfctl-startup-"))
    policy = make_tiny_policy(work / "policy", TinyArch(hidden_size=64, num_layers=2, num_heads=2))
    prompts = write_jsonl(work / "prompts.jsonl", PROMPTS)
    reward = work / "reward.py"
    reward.write_text(REWARD)
    base = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    base.pop("RAY_ADDRESS", None)
    bytecode = {k: v for k, v in base.items() if k != "PYTHONPYCACHEPREFIX"}
    ray, driver = ["--role-workers", "ray"], ["--role-workers", "driver"]
    every = {"bytecode": (bytecode, ray),
             "no_bytecode": ({**base, "PYTHONPYCACHEPREFIX": str(work / "empty-pycache"),
                              "PYTHONDONTWRITEBYTECODE": "1"}, ray),
             "in_driver": (bytecode, driver)}
    modes = {name: every[name] for name in args.modes.split(",")}
    load_before = os.getloadavg()[0]
    seconds: dict[str, list[float]] = {name: [] for name in modes}
    for i in range(args.repeats):
        for name, (env, extra) in modes.items():
            seconds[name].append(_run(work, policy, prompts, reward, env, extra, f"{name}-{i}"))
    median = {name: round(statistics.median(s), 2) for name, s in seconds.items()}
    ratios = {f"{a}_over_{b}": round(median[a] / median[b], 2)
              for a, b in (("no_bytecode", "bytecode"), ("bytecode", "in_driver")) if a in median and b in median}
    print(json.dumps({"benchmark": "train_startup", "median_wall_s": median,
                      "runs_s": {name: [round(x, 2) for x in s] for name, s in seconds.items()}, **ratios,
                      "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]}))


if __name__ == "__main__":
    main()
