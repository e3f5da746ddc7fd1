"""Benchmark the arithmetic demo: held-out exact match before and after RL over several seeds, and a control.

Runs examples/arithmetic/demo.py's whole pipeline (check-reward, serve-rm, train-ppo against the server, evaluation)
once per seed, then once more with the rewards shuffled across samples (shuffled_reward_func.py), which must not
improve accuracy: the gain of the real runs is then the reward's, not the optimiser's or the sampler's. Prints one
JSON line. The reward-model-server variant scores with the small reward model, so it has no shuffled-reward
control (the JSON line says so).

    python benchmarks/demo.py                         # seeds 1,2,3 + the shuffled control, the demo's full length
    python benchmarks/demo.py --seeds 1 --steps 50    # quicker
    python benchmarks/demo.py --variant reward-model-server --seeds 1   # the reward model behind serve-rm
    python benchmarks/demo.py --variant judge --seeds 1                 # the small LLM judge behind serve-rm
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ARITH = Path(__file__).resolve().parents[1] / "examples" / "arithmetic"
sys.path.insert(0, str(ARITH))

from demo import VARIANTS, run_demo  # noqa: E402


def _run(args: argparse.Namespace, root: Path, seed: int, reward_func: Path | None) -> dict:
    tag = "shuffled" if reward_func else "real"
    summary = run_demo(args.variant, out=root / f"{tag}_seed{seed}", seed=seed, steps=args.steps,
                       reward_func=reward_func, echo=False, rollout=args.rollout)
    evals = [accuracy for _, accuracy in summary["curve"]["eval_accuracy"]]  # none when a reward model scores
    return {**{k: summary[k] for k in ("seed", "accuracy_before", "accuracy_after", "gain_points", "steps",
                                       "rl_seconds", "rl_seconds_to_90", "total_seconds", "held_out_rows", "rollout")},
            "evaluations": len(evals), "eval_accuracy_range": [min(evals), max(evals)] if evals else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="reward-func-server", choices=sorted(VARIANTS))
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds of the real runs")
    parser.add_argument("--steps", type=int, default=None, help="PPO steps per run (default: the demo's)")
    parser.add_argument("--no-control", action="store_true", help="skip the shuffled-reward control")
    parser.add_argument("--workdir", type=Path, default=None, help="keep every run's outputs here")
    parser.add_argument("--rollout", choices=("auto", "vllm", "hf"), default="auto",
                        help="rollouts on one vLLM engine or HF generate (default: auto, as the demo chooses)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    root = (args.workdir or Path(tempfile.mkdtemp(prefix="rlhfctl-bench-demo-"))).resolve()

    load_at_start = os.getloadavg()[0]
    runs = [_run(args, root, seed, None) for seed in seeds]
    gains = [r["gain_points"] for r in runs]
    result = {
        "benchmark": "demo", "variant": args.variant, "held_out_rows": runs[0]["held_out_rows"],
        "accuracy_before": runs[0]["accuracy_before"],
        "accuracy_after": [r["accuracy_after"] for r in runs],
        "gain_points": gains, "gain_points_mean": round(statistics.mean(gains), 1),
        "gain_points_spread": round(max(gains) - min(gains), 1),
        "gain_points_std": round(statistics.stdev(gains), 2) if len(gains) > 1 else 0.0,
        "rl_seconds": [r["rl_seconds"] for r in runs], "rl_seconds_to_90": [r["rl_seconds_to_90"] for r in runs],
        "total_seconds": [r["total_seconds"] for r in runs],
        "steps": runs[0]["steps"], "seeds": seeds, "rollout": runs[0]["rollout"],
    }
    if not VARIANTS[args.variant].reward_func:
        result["control"] = f"none: {args.variant} has no reward_func to shuffle"
    elif not args.no_control:
        control = _run(args, root, seeds[0], ARITH / "shuffled_reward_func.py")
        result.update(control_accuracy_after=control["accuracy_after"], control_gain_points=control["gain_points"],
                      control_rl_seconds=control["rl_seconds"], control_evaluations=control["evaluations"],
                      control_eval_accuracy_range=control["eval_accuracy_range"])
    result["workdir"] = str(root)
    result["load_average_1m"] = {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
