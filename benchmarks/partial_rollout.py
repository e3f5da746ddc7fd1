"""Benchmark --partial-rollout: does a run whose weight syncs land mid-generation still learn, and how many samples do
the syncs split? One JSON line per run.

The setting is made so that every sync lands while the engine generates. A tiny untrained policy rarely says EOS, so
its responses run to --generate-max-len tokens (long responses). One vLLM engine generates the next step's rollout
while the actor trains (--async-train, queue size 1, a short queue), and generation takes far longer than training.
The reward is the share of "e" in a response, which a tiny policy learns within a few dozen steps. With
--partial-rollout a sync pauses the generation in flight, loads the new weights, and resumes it. The tokens sampled
before the sync keep the old policy's log-probs, and the IS correction (--enable-vllm-is-correction) sees them.

`--compare` also runs the same job with --async-train alone, where a sync waits for the generation in flight to end.
The runs share the seed, prompts and weights. Printed per run: the mean reward of the first and last
--reward-window steps, the split samples (`rollout/partial_samples`, summed over the steps), the widest policy-version
span within one sample, the largest engine-vs-actor log-prob gap, the mean step time and the load average.

    python benchmarks/partial_rollout.py                    # 24 steps, 128-token responses
    python benchmarks/partial_rollout.py --steps 40 --compare
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REWARD = '''
def reward_func(queries, prompts, labels, **kwargs):
    responses = [q[len(p):] for q, p in zip(queries, prompts)]
    return [r.count("e") / max(1, len(r)) for r in responses]
'''
PROMPTS_PER_STEP, SAMPLES_PER_PROMPT = 2, 4


def run(partial: bool, args: argparse.Namespace, root: Path, policy: Path, prompts: Path, reward: Path) -> dict:
    from async_train import train_in_process  # benchmarks/ is this script's folder

    out = root / f"out_{'partial' if partial else 'async'}_{time.time_ns()}"
    samples = PROMPTS_PER_STEP * SAMPLES_PER_PROMPT
    options = {
        "pretrain": str(policy), "prompt_data": str(prompts), "input_key": "input", "label_key": "answer",
        "remote_rm_url": str(reward), "save_path": str(out), "ckpt_path": str(out / "ckpt"),
        "max_samples": PROMPTS_PER_STEP * args.steps, "num_episodes": 1, "advantage_estimator": "group_norm",
        "n_samples_per_prompt": SAMPLES_PER_PROMPT, "init_kl_coef": 0.0, "rollout_batch_size": PROMPTS_PER_STEP,
        "micro_rollout_batch_size": PROMPTS_PER_STEP, "train_batch_size": samples, "micro_train_batch_size": samples,
        "prompt_max_len": 16, "generate_max_len": args.generate_max_len, "engine": "torch",
        "actor_learning_rate": args.learning_rate, "lr_scheduler": "constant", "seed": 7, "vllm_num_engines": 1,
        "enforce_eager": True, "async_train": True, "async_queue_size": 1, "partial_rollout": partial,
        "enable_vllm_is_correction": True,
    }
    steps, wall, load_at_start = train_in_process(options)
    window = min(args.reward_window, len(steps) // 2)
    return {
        "mode": "async+partial_rollout" if partial else "async", "steps": len(steps),
        "generate_max_len": args.generate_max_len, "samples_per_step": samples,
        "reward_start": round(statistics.fmean(s["reward"] for s in steps[:window]), 4),
        "reward_end": round(statistics.fmean(s["reward"] for s in steps[-window:]), 4),
        "response_length_mean": round(statistics.fmean(s["response_length"] for s in steps), 1),
        "partial_samples_total": int(sum(s.get("rollout/partial_samples", 0) for s in steps)),
        "steps_with_partial_samples": sum(1 for s in steps if s.get("rollout/partial_samples", 0) > 0),
        "policy_version_span_max": max(s.get("rollout/policy_version_span", 1) for s in steps),
        "logprob_diff_max": round(max(s.get("rollout/logprob_diff_max", 0.0) for s in steps), 6),
        "time_per_step_s": round(statistics.fmean(s["time/step"] for s in steps[1:]), 3),
        "time_rollout_wait_s": round(statistics.fmean(s.get("time/rollout_wait", 0.0) for s in steps[1:]), 3),
        "time_weight_sync_s": round(statistics.fmean(s.get("time/weight_sync", 0.0) for s in steps[1:]), 3),
        "wall_s_including_startup": round(wall, 1), "cpu_cores": os.cpu_count(),
        "load_average_1m": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--generate-max-len", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    parser.add_argument("--reward-window", type=int, default=5, help="steps averaged for reward_start/_end")
    parser.add_argument("--compare", action="store_true", help="also run --async-train without --partial-rollout")
    parser.add_argument("--workdir", default=None, help="keep outputs here (default: a temp folder)")
    args = parser.parse_args(argv)
    if args.steps < 4 or args.generate_max_len < 1 or args.reward_window < 1:
        parser.error("--steps must be at least 4, --generate-max-len and --reward-window at least 1")
    from rlhfctl.models.tiny import TinyArch, make_tiny_policy
    from tests.helpers import PROMPTS, write_jsonl

    root = Path(args.workdir or tempfile.mkdtemp(prefix="rlhfctl-bench-partial-"))
    root.mkdir(parents=True, exist_ok=True)
    policy = make_tiny_policy(root / "policy", TinyArch(hidden_size=64, num_layers=2, num_heads=2))
    prompts = write_jsonl(root / "prompts.jsonl", [PROMPTS[i % len(PROMPTS)] for i in range(2 * args.steps)])
    reward = root / "reward_func.py"
    reward.write_text(REWARD)
    for partial in ((True, False) if args.compare else (True,)):
        print(json.dumps(run(partial, args, root, policy, prompts, reward)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
