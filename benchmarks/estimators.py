"""The estimator race: which policy-optimisation recipe learns the arithmetic task best for the same samples.

Every recipe starts from the shipped SFT policy (examples/arithmetic/policy) with the options of
examples/arithmetic/train_reward_func_file.yaml (8 samples per prompt, 32 prompts per step, one update per step,
reward_func.py in-process, no KL) and trains for the same number of steps, so on the same number of samples; only
the recipe's own flags differ. Held-out exact match (eval/exact_match of train-ppo's --eval-dataset, greedy, on
examples/arithmetic/test.jsonl) is logged every --eval-steps. The shuffled-reward control
(shuffled_reward_func.py, group_norm) shows what training without information in the reward does.

Recipes: gae (with a critic), reinforce, reinforce_baseline, rloo, group_norm, dr_grpo, gspo (group_norm
advantages, sequence-level ratio), dapo (clip-higher 0.2/0.28, dynamic filtering of all-right and all-wrong groups,
token-mean loss, overlong penalty). DAPO's filter generates more samples than it trains on; "samples" here are the
samples trained on, and the JSON gives DAPO's generated count too.

Prints a table (stderr), writes estimators.png (one curve per recipe, mean over seeds) and table.md in --workdir,
and prints one JSON line (stdout).

    python benchmarks/estimators.py                                      # full race: 250 steps, seeds 1,2
    python benchmarks/estimators.py --steps 2 --eval-steps 2 --seeds 1 --eval-max-samples 40  # a smoke run
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
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
ARITH = ROOT / "examples" / "arithmetic"
BASE_CONFIG = ARITH / "train_reward_func_file.yaml"
CONTROL = "shuffled_control"

# The recipe's own flags on top of BASE_CONFIG (which sets group_norm, n = 8, no KL).
RECIPES: dict[str, list[str]] = {
    "gae": ["--advantage-estimator", "gae", "--critic-learning-rate", "5e-5"],
    "reinforce": ["--advantage-estimator", "reinforce"],
    "reinforce_baseline": ["--advantage-estimator", "reinforce_baseline"],
    "rloo": ["--advantage-estimator", "rloo"],
    "group_norm": ["--advantage-estimator", "group_norm"],
    "dr_grpo": ["--advantage-estimator", "dr_grpo", "--loss-agg-mode", "seq-mean-token-sum-norm"],
    "gspo": ["--advantage-estimator", "group_norm", "--policy-loss-type", "gspo"],
    "dapo": ["--advantage-estimator", "group_norm", "--eps-clip-low-high", "0.2,0.28", "--dynamic-filtering",
             "--dynamic-filtering-reward-range", "0,1", "--loss-agg-mode", "token-mean",
             "--overlong-buffer-len", "2", "--overlong-penalty-factor", "1"],
}
CONTROL_FLAGS = ["--advantage-estimator", "group_norm", "--remote-rm-url", str(ARITH / "shuffled_reward_func.py")]
# Room for the longest right answer (3 digits + EOS) plus DAPO's 2-token overlong buffer, for every recipe alike.
GENERATE_MAX_LEN = 6


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
            "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                                os.environ.get("PYTHONPATH")]))}


def budget(steps: int, rollout_batch_size: int) -> list[str]:
    """Flags for `steps` PPO steps: part of one pass over the training prompts, or whole passes."""
    per_episode = len((ARITH / "train.jsonl").read_text().splitlines()) // rollout_batch_size
    if steps <= per_episode:
        return ["--num-episodes", "1", "--max-samples", str(steps * rollout_batch_size)]
    if steps % per_episode:
        raise SystemExit(f"--steps {steps}: at most {per_episode} (one pass over the prompts) or a multiple of it")
    return ["--num-episodes", str(steps // per_episode)]


def run_one(name: str, flags: list[str], seed: int, args: argparse.Namespace, out: Path,
            ray_address: Optional[str]) -> dict[str, Any]:
    """One train-ppo run; its held-out curve (samples trained on -> exact match) and costs."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "rlhfctl", "train-ppo", "--config", str(BASE_CONFIG),
           "--remote-rm-url", str(ARITH / "reward_func.py"), "--save-path", str(out / "policy"),
           "--ckpt-path", str(out / "ckpt"), "--seed", str(seed), "--rollout-batch-size", str(args.rollout_batch_size),
           "--eval-steps", str(args.eval_steps), "--generate-max-len", str(GENERATE_MAX_LEN),
           *budget(args.steps, args.rollout_batch_size), *flags]
    if args.eval_max_samples:
        cmd += ["--eval-max-samples", str(args.eval_max_samples)]
    if ray_address:
        cmd += ["--ray-address", ray_address]
    started = time.perf_counter()
    with (out / "train-ppo.log").open("w") as log:
        code = subprocess.run(cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        tail = "\n".join((out / "train-ppo.log").read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"{name} seed {seed}: train-ppo exited {code}; log {out / 'train-ppo.log'}:\n{tail}")
    metrics = [json.loads(line) for line in (out / "policy" / "metrics.jsonl").read_text().splitlines() if line]
    samples, generated, curve = 0, 0, []
    for m in metrics:
        if "samples" in m:  # a training step (step 0 is the evaluation before training)
            samples += int(m["samples"])
            generated += int(m.get("dynamic_filtering/groups_sampled", m["samples"] / args.n) * args.n)
        if "eval/exact_match" in m:
            curve.append((samples, float(m["eval/exact_match"])))
    return {"recipe": name, "seed": seed, "curve": curve, "final": curve[-1][1], "samples": samples,
            "generated": generated, "seconds": round(seconds, 1)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per recipe: final exact match per seed and mean, the mean curve over seeds, samples and time."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["recipe"] for r in runs):
        mine = [r for r in runs if r["recipe"] == name]
        finals = [r["final"] for r in mine]
        points = sorted({s for r in mine for s, _ in r["curve"]})
        curve = [(s, statistics.mean(v for r in mine for x, v in r["curve"] if x == s)) for s in points]
        out[name] = {"final_exact_match": [round(f, 4) for f in finals],
                     "mean": round(statistics.mean(finals), 4),
                     "spread": round(max(finals) - min(finals), 4),
                     "curve": [[s, round(v, 4)] for s, v in curve],
                     "samples_trained": mine[0]["samples"], "samples_generated": [r["generated"] for r in mine],
                     "seconds": [r["seconds"] for r in mine]}
    return out


def table(summary: dict[str, Any], before: float) -> str:
    """Markdown: recipe, final held-out exact match (mean, per seed), gain over the SFT policy, samples, time."""
    rows = ["| recipe | held-out exact match (mean) | per seed | gain (points) | samples trained (generated) "
            "| seconds per run |", "|---|---|---|---|---|---|"]
    for name, r in sorted(summary.items(), key=lambda kv: -kv[1]["mean"]):
        generated = statistics.mean(r["samples_generated"])
        samples = f"{r['samples_trained']}" + (f" ({generated:.0f})" if generated != r["samples_trained"] else "")
        rows.append(f"| {name} | {r['mean']:.1%} | {' / '.join(f'{f:.1%}' for f in r['final_exact_match'])} "
                    f"| {100 * (r['mean'] - before):+.1f} | {samples} | {statistics.mean(r['seconds']):.0f} |")
    return "\n".join(rows)


def plot(summary: dict[str, Any], out: Path) -> Optional[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    palette = [plt.get_cmap("tab10")(i) for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]  # tab10 without its grey
    for i, (name, r) in enumerate(summary.items()):
        xs, ys = zip(*r["curve"]) if r["curve"] else ((), ())
        style = {"color": "black", "ls": "--"} if name == CONTROL else {"color": palette[i % len(palette)]}
        ax.plot(xs, ys, marker="o", ms=3, lw=1.6, label=f"{name} ({r['mean']:.1%})", **style)
    ax.set_xlabel("samples trained on")
    ax.set_ylabel("held-out exact match (greedy)")
    ax.set_title("arithmetic: estimators at the same sample budget (mean over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated subset of " + ",".join(RECIPES))
    parser.add_argument("--seeds", default="1,2", help="comma-separated seeds (every recipe runs each)")
    parser.add_argument("--steps", type=int, default=250, help="PPO steps per run (the sample budget; the demo's "
                        "250 = 2 passes over the 4,000 prompts)")
    parser.add_argument("--rollout-batch-size", type=int, default=32, help="prompts per step (x 8 samples)")
    parser.add_argument("--eval-steps", type=int, default=25, help="evaluate held-out exact match every N steps")
    parser.add_argument("--eval-max-samples", type=int, default=None, help="held-out prompts (default: all 400)")
    parser.add_argument("--no-control", action="store_true", help="skip the shuffled-reward control")
    parser.add_argument("--workdir", type=Path, default=None, help="keep every run's outputs here")
    parser.add_argument("--ray-address", default=None, help="run on this Ray cluster (default: a local one per run)")
    args = parser.parse_args(argv)
    names = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in names if r not in RECIPES]
    if unknown or not names:
        parser.error(f"--recipes: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(RECIPES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.steps < 1 or args.eval_steps < 1:
        parser.error("--steps and --eval-steps must be >= 1")
    from rlhfctl.config import read_config_file

    args.n = int(read_config_file(BASE_CONFIG)["n_samples_per_prompt"])
    root = (args.workdir or Path(tempfile.mkdtemp(prefix="rlhfctl-estimators-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    runs = []
    plan = [(n, RECIPES[n]) for n in names] + ([] if args.no_control else [(CONTROL, CONTROL_FLAGS)])
    for name, flags in plan:
        for seed in seeds:
            # Each run starts its own local Ray, sized and threaded as a user's run is (as the demo runs).
            run = run_one(name, flags, seed, args, root / f"{name}_seed{seed}", args.ray_address)
            print(f"{name} seed {seed}: held-out exact match {run['final']:.1%} ({run['seconds']:.0f} s)",
                  file=sys.stderr, flush=True)
            runs.append(run)
    summary = summarise(runs)
    before = runs[0]["curve"][0][1]  # step 0: the SFT policy, the same for every run
    recipes = {k: v for k, v in summary.items() if k != CONTROL}
    ranked = sorted(recipes, key=lambda k: -recipes[k]["mean"])
    result: dict[str, Any] = {
        "benchmark": "estimators", "task": "arithmetic", "steps": args.steps, "seeds": seeds,
        "samples_per_run": runs[0]["samples"], "held_out_prompts": args.eval_max_samples or 400,
        "exact_match_before": round(before, 4), "recipes": summary, "winner": ranked[0],
        "winner_margin_points": round(100 * (recipes[ranked[0]]["mean"] - recipes[ranked[1]]["mean"]), 1)
        if len(ranked) > 1 else None,
        "cpu_count": os.cpu_count(), "total_seconds": round(time.perf_counter() - started, 1), "workdir": str(root),
    }
    if CONTROL in summary:
        control = summary[CONTROL]["mean"]
        result["control_exact_match"] = control
        result["beats_control_points"] = {k: round(100 * (v["mean"] - control), 1) for k, v in recipes.items()}
        result["all_beat_control"] = all(v["mean"] > control for v in recipes.values())
    md = table(summary, before)
    (root / "table.md").write_text(md + "\n")
    png = plot(summary, root / "estimators.png")
    result["plot"] = str(png) if png else None
    print(md, file=sys.stderr)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
