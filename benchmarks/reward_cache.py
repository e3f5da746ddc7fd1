"""The reward cache on the arithmetic task: how often a GRPO run's samples repeat, and the reward time it saves.

Runs train-ppo with examples/reward_kinds/train_combined.yaml (the arithmetic reward_func.py + the small reward
model, scored in the driver) twice, --episodes passes over the first --prompts prompts (32 per step): with
--reward-cache-size 0 (identical samples of one batch scored once) and with a cache across steps, which hits when
a prompt comes back in a later episode with an answer given before. Prints one JSON line: the mean reward/cache_hit_rate of each, their
mean time/reward per step, and how far apart the two runs' mean rewards are at each step.

    python benchmarks/reward_cache.py --prompts 64 --episodes 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "reward_kinds" / "train_combined.yaml"


def run(out: Path, prompts: int, episodes: int, cache_size: int) -> list[dict]:
    subprocess.run([sys.executable, "-m", "rlhfctl", "train-ppo", "--config", str(CONFIG), "--max-samples",
                    str(prompts), "--num-episodes", str(episodes), "--eval-max-samples", "16", "--eval-steps",
                    str(10 ** 6),
                    "--reward-cache-size", str(cache_size), "--save-path", str(out), "--ckpt-path",
                    str(out / "ckpt")], cwd=ROOT, check=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [m for m in map(json.loads, lines) if "reward/cache_hit_rate" in m]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64, help="prompts per episode (a multiple of 32)")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--cache-size", type=int, default=100_000)
    args = parser.parse_args(argv)
    if args.prompts < 32 or args.prompts % 32 or args.episodes < 1 or args.cache_size < 1:
        parser.error("--prompts must be a multiple of 32, --episodes and --cache-size at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        within = run(Path(tmp) / "within", args.prompts, args.episodes, 0)
        across = run(Path(tmp) / "across", args.prompts, args.episodes, args.cache_size)

    def mean(rows: list[dict], key: str) -> float:
        return round(sum(r[key] for r in rows) / len(rows), 4)

    print(json.dumps({
        "benchmark": "reward_cache", "config": str(CONFIG.relative_to(ROOT)), "steps": len(across), "prompts": args.prompts, "episodes": args.episodes,
        "samples_per_step": 256, "hit_rate_within_batch": mean(within, "reward/cache_hit_rate"),
        "hit_rate_across_steps": mean(across, "reward/cache_hit_rate"),
        "reward_seconds_per_step_within_batch": mean(within, "time/reward"),
        "reward_seconds_per_step_across_steps": mean(across, "time/reward"),
        # Not bit-equal in general: the reward model scores fewer texts per pass with the cache, and a text's reward
        # depends on its batch within fp32 rounding (1e-6); an update then differs by as much, and sampling may too.
        "max_abs_reward_diff_per_step": [round(abs(a["reward"] - b["reward"]), 8) for a, b in zip(within, across)],
        "cpu_cores": os.cpu_count(), "load_average": round(os.getloadavg()[0], 1),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
