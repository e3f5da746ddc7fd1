"""Benchmark --async-train: synchronous vs asynchronous train-ppo completions/s in one run, one JSON line each and a
summary line with the speed-up.

The setting: the arithmetic example's policy (examples/arithmetic/policy, trained to answer "a+b="), its exact-match
reward_func.py, group_norm without a KL term (no reference model), one vLLM engine and one actor worker on one CPU
each, so generation (the engine) and training (the actor) can run at the same time on two cores. The batch and
lengths are picked so that a step's generation and its training take comparable time (the JSON lines print both).
Both runs start from the same weights with the same seed and prompts; the rate is measured over the steps after the
first (warm-up): all timed samples over all timed seconds, where an asynchronous step's time includes any wait for
its rollout. `reward_start`/`reward_end`: the mean reward of the first and last --reward-window steps, to show the
policy still learns with samples one update old.

    python benchmarks/async_train.py                       # 30 steps each, queue size 1
    python benchmarks/async_train.py --steps 40 --queue-size 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "arithmetic"


def train_in_process(options: dict) -> tuple[list[dict], float, float]:
    """train-ppo with these options in this process: (each step's metrics, wall seconds, the 1-minute load average
    at its start)."""
    from rlhfctl.config import resolve
    from rlhfctl.ppo.run import train_ppo

    cfg = resolve("train-ppo", options)
    load_at_start = os.getloadavg()[0]
    started = time.perf_counter()
    train_ppo(cfg)
    wall = time.perf_counter() - started
    steps = [json.loads(line) for line in (Path(cfg.save_path) / "metrics.jsonl").read_text().splitlines()]
    return steps, wall, load_at_start


def run(mode: str, args: argparse.Namespace, root: Path) -> dict:
    out = root / f"out_{mode}_{time.time_ns()}"
    samples = args.prompts_per_step * 8
    options = {
        "pretrain": str(EXAMPLE / "policy"), "prompt_data": str(EXAMPLE / "train.jsonl"), "input_key": "input",
        "label_key": "answer", "remote_rm_url": str(EXAMPLE / "reward_func.py"), "save_path": str(out),
        "ckpt_path": str(out / "ckpt"), "max_samples": args.prompts_per_step * (args.steps + 1),
        "advantage_estimator": "group_norm", "n_samples_per_prompt": 8, "init_kl_coef": 0.0, "max_epochs": 1,
        "rollout_batch_size": args.prompts_per_step, "micro_rollout_batch_size": args.prompts_per_step,
        "train_batch_size": samples, "micro_train_batch_size": samples, "prompt_max_len": 8,
        "generate_max_len": args.generate_max_len, "engine": "torch", "actor_learning_rate": args.learning_rate,
        "lr_scheduler": "constant", "seed": 1, "vllm_num_engines": 1, "enable_vllm_is_correction": True,
    }
    if args.enforce_eager:
        options["enforce_eager"] = True
    if mode == "async":
        options.update(async_train=True, async_queue_size=args.queue_size)
    steps, wall, load_at_start = train_in_process(options)
    timed = steps[1:]  # the first step pays for lazy initialisation (and, async, for the first rollout alone)
    total = sum(s["time/step"] for s in timed)

    def mean(key: str) -> float:
        return round(statistics.fmean(s.get(key, 0.0) for s in timed), 4)

    window = min(args.reward_window, len(steps) // 2)
    return {
        "mode": mode, "queue_size": args.queue_size if mode == "async" else None, "enforce_eager": args.enforce_eager,
        "prompts_per_step": args.prompts_per_step, "samples_per_prompt": 8, "generate_max_len": args.generate_max_len,
        "completions_per_s": round(sum(s["samples"] for s in timed) / total, 2),
        "completions_per_s_median_step": round(statistics.median(s["samples"] / s["time/step"] for s in timed), 2),
        "time_per_step_s": round(total / len(timed), 4),
        "time_generate_s": mean("time/generate"), "time_reward_s": mean("time/reward"),
        "time_make_experience_s": mean("time/make_experience"), "time_train_s": mean("time/train"),
        "time_weight_sync_s": mean("time/weight_sync"), "time_rollout_wait_s": mean("time/rollout_wait"),
        "time_overlap_s": mean("time/overlap"), "policy_version_lag_max": max(
            s.get("rollout/policy_version_lag", 0.0) for s in steps),
        "reward_start": round(statistics.fmean(s["reward"] for s in steps[:window]), 4),
        "reward_end": round(statistics.fmean(s["reward"] for s in steps[-window:]), 4),
        "steps": len(steps), "steps_timed": len(timed), "wall_s_including_startup": round(wall, 1),
        "torch_threads_per_worker": int(timed[-1]["actor_torch_threads"]), "cpu_cores": os.cpu_count(),
        "load_average_1m": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="steps per run (the first is warm-up)")
    parser.add_argument("--queue-size", type=int, default=1, help="--async-queue-size of the async run")
    parser.add_argument("--prompts-per-step", type=int, default=8, help="prompts per step (8 samples each)")
    parser.add_argument("--generate-max-len", type=int, default=6)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--reward-window", type=int, default=5, help="steps averaged for reward_start/_end")
    parser.add_argument("--enforce-eager", action="store_true",
                        help="vLLM without torch.compile (OpenRLHF scripts' --enforce_eager): slower generation")
    parser.add_argument("--first", choices=["sync", "async"], default="sync",
                        help="which run goes first (swap it to see how much the machine's load moved the figures)")
    parser.add_argument("--workdir", default=None, help="keep outputs here (default: a temp folder)")
    args = parser.parse_args(argv)
    for name in ("steps", "queue_size", "prompts_per_step", "generate_max_len", "reward_window"):
        if getattr(args, name) < (3 if name == "steps" else 1):
            parser.error(f"--{name.replace('_', '-')} must be at least {3 if name == 'steps' else 1}")
    root = Path(args.workdir or tempfile.mkdtemp(prefix="rlhfctl-bench-async-"))
    root.mkdir(parents=True, exist_ok=True)
    results = {}
    for mode in (("sync", "async") if args.first == "sync" else ("async", "sync")):
        results[mode] = run(mode, args, root)
        print(json.dumps(results[mode]), flush=True)
    print(json.dumps({"speedup_async_over_sync": round(results["async"]["completions_per_s"]
                                                       / results["sync"]["completions_per_s"], 3),
                      "target": 1.3}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
