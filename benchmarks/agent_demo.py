"""Benchmark the multi-turn example: held-out exact match of the arithmetic policy before and after PPO against
the two-try environment (examples/agent/agent_func.py), as the arithmetic demo measures it.

Accuracy is the greedy FIRST answer's exact match on examples/arithmetic/test.jsonl (evaluate.py, 400 rows), so it
compares with the demo's figures; the run's own eval/reward (the two-try episode score, greedy) and eval/agent/turns
at its first and last evaluation are printed too. `--control` also trains against control_agent_func.py, whose
rewards ignore the answers: its accuracy must not rise. Prints one JSON line.

    python benchmarks/agent_demo.py                          # one pass over the 4,000 training prompts (125 steps)
    python benchmarks/agent_demo.py --steps 20 --control     # quicker, with the control
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARITH = ROOT / "examples" / "arithmetic"
AGENT = ROOT / "examples" / "agent"
sys.path.insert(0, str(ARITH))

from evaluate import accuracy  # noqa: E402


def train(out: Path, seed: int, steps: int | None, agent_func: Path) -> dict:
    args = [sys.executable, "-m", "rlhfctl", "train-ppo", "--config", str(AGENT / "train_agent.yaml"),
            "--agent-func-path", str(agent_func), "--save-path", str(out / "policy"), "--ckpt-path",
            str(out / "ckpt"), "--seed", str(seed)]
    if steps is not None:
        args += ["--max-samples", str(steps * 32)]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"train-ppo failed ({done.returncode}):\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "policy" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/reward" in r]
    trained = [r for r in rows if "time/step" in r]
    return {"steps": len(trained), "samples": int(sum(r["samples"] for r in trained)),
            "rl_seconds": round(sum(r["time/step"] + r.get("time/evaluate", 0.0) for r in trained), 1),
            "total_seconds": round(time.perf_counter() - t0, 1),
            "episode_score_first_last_eval": [round(evals[0]["eval/reward"], 4), round(evals[-1]["eval/reward"], 4)],
            "turns_first_last_eval": [round(evals[0]["eval/agent/turns"], 3), round(evals[-1]["eval/agent/turns"], 3)],
            "train_turns_first_last_step": [round(trained[0]["agent/turns"], 3), round(trained[-1]["agent/turns"], 3)],
            "policy": str(out / "policy")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="PPO steps (default: one pass, 125)")
    parser.add_argument("--control", action="store_true", help="also train against rewards that ignore answers")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    root = (args.workdir or Path(tempfile.mkdtemp(prefix="rlhfctl-bench-agent-"))).resolve()
    load_at_start = os.getloadavg()[0]
    test = ARITH / "test.jsonl"
    before = accuracy(ARITH / "policy", test)
    real = train(root / "real", args.seed, args.steps, AGENT / "agent_func.py")
    after = accuracy(real["policy"], test)
    result = {"benchmark": "agent_demo", "seed": args.seed, "held_out_rows": 400,
              "accuracy_before": round(before, 4), "accuracy_after": round(after, 4),
              "gain_points": round(100 * (after - before), 1), **{k: v for k, v in real.items() if k != "policy"}}
    if args.control:
        control = train(root / "control", args.seed, args.steps, AGENT / "control_agent_func.py")
        control_after = accuracy(control["policy"], test)
        result.update(control_accuracy_after=round(control_after, 4),
                      control_gain_points=round(100 * (control_after - before), 1))
    result.update(workdir=str(root), torch_threads=torch.get_num_threads(),
                  load_average_1m={"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)})
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
