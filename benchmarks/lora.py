"""Benchmark LoRA against full fine-tuning on the arithmetic demo: one JSON line with both runs and what LoRA changes.

The setting is the demo's (examples/arithmetic/train_reward_func_file.yaml: its trained policy, exact-match
reward_func.py, group_norm, no KL term), with one vLLM engine generating, so the weight sync is measured too. Both
runs start from the same weights, seed and prompts; each reports:
- trainable_share: parameters that take gradients (and optimizer state), as a share of all;
- training_state_mb: what training adds per actor worker: gradients + AdamW's two fp32 moments of those parameters;
- peak_rss_mb: the actor worker's peak resident memory (actor_peak_rss_mb; includes torch and the model itself);
- time_per_step_s and time_train_s: mean over the steps after the first (warm-up);
- time_weight_sync_s and sync_mb: seconds and megabytes per sync (LoRA sends the merged weights: as many bytes);
- eval_before / eval_after / gain: held-out greedy exact match (eval/exact_match) before and after training.
LoRA's learning rate is its own (adapters need a larger one than full weights); both are printed.

    python benchmarks/lora.py                              # the demo's length: 2 episodes of 125 steps
    python benchmarks/lora.py --steps 40 --eval-max-samples 200
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "arithmetic" / "train_reward_func_file.yaml"
MB = 1 << 20


def model_figures(options: dict) -> dict:
    """Trainable share, training-state and sync megabytes of the actor as the run builds it (in this process)."""
    from rlhfctl.config import LoRAArgs, resolve
    from rlhfctl.models.actor import load_policy
    from rlhfctl.models.lora import trainable_share, with_adapters
    from rlhfctl.rollout.weight_sync import sync_tensors

    cfg = resolve("train-ppo", options)
    model = with_adapters(load_policy(cfg.pretrain), cfg.slice(LoRAArgs))
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sent = sum(int(torch_numel(t.shape)) * t.dtype.itemsize for t in sync_tensors(model))
    return {"trainable_share": round(trainable_share(model), 5), "trainable_params": trained,
            "training_state_mb": round(trained * (4 + 4 + 4) / MB, 3), "sync_mb": round(sent / MB, 3)}


def torch_numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def options_for(mode: str, args: argparse.Namespace, out: Path) -> dict:
    """The demo's options for `args.steps` steps with one vLLM engine, LoRA's or full fine-tuning's."""
    from rlhfctl.config.files import read_config_file

    options = read_config_file(DEMO, "train-ppo")
    options = {k: (str(ROOT / v) if isinstance(v, str) and v.startswith("examples/") else v)
               for k, v in options.items()}
    prompts = options["rollout_batch_size"]
    options.update(save_path=str(out), ckpt_path=str(out / "ckpt"), max_samples=prompts * args.steps,
                   num_episodes=1, eval_steps=-1, eval_max_samples=args.eval_max_samples, vllm_num_engines=1,
                   enforce_eager=True, vllm_gpu_memory_utilization=0.01, seed=args.seed)
    if mode == "lora":
        options.update(lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, actor_learning_rate=args.lora_lr)
    else:
        options.update(actor_learning_rate=args.full_lr)
    return options


def run(mode: str, args: argparse.Namespace, root: Path) -> dict:
    from rlhfctl.config import resolve
    from rlhfctl.ppo.run import train_ppo

    out = root / f"out_{mode}_{time.time_ns()}"
    options = options_for(mode, args, out)
    started = time.perf_counter()
    train_ppo(resolve("train-ppo", options))
    result = summary(mode, options, out, time.perf_counter() - started)
    print(json.dumps(result), file=sys.stderr, flush=True)  # progress: this run's figures as soon as they exist
    return result


def summary(mode: str, options: dict, out: Path, wall: float) -> dict:
    """One run's figures from its options and its --save-path's metrics.jsonl."""
    figures = model_figures(options)
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [s for s in steps if s["step"] > 0]
    timed = train[1:]

    def mean(key: str) -> float:
        return round(statistics.fmean(s[key] for s in timed if key in s), 4)

    before, after = steps[0]["eval/exact_match"], train[-1]["eval/exact_match"]
    return {"mode": mode, "learning_rate": options["actor_learning_rate"], **figures,
            "peak_rss_mb": round(max(s["actor_peak_rss_mb"] for s in train), 1),
            "time_per_step_s": mean("time/step"), "time_train_s": mean("time/train"),
            "time_weight_sync_s": mean("time/weight_sync"),
            "logprob_diff_max": max(s["rollout/logprob_diff_max"] for s in train),
            "eval_before": before, "eval_after": after, "gain": round(after - before, 4),
            "steps": len(train), "wall_s_including_startup": round(wall, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=250, help="training steps per run (the demo: 250)")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lora-lr", type=float, default=1e-3, help="LoRA's actor learning rate")
    parser.add_argument("--full-lr", type=float, default=5e-5, help="full fine-tuning's (the demo's)")
    parser.add_argument("--eval-max-samples", type=int, default=400, help="held-out prompts evaluated")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="keep outputs here (default: a temp folder)")
    parser.add_argument("--modes", default="lora,full", choices=["lora,full", "full,lora", "lora", "full"],
                        help="which runs, in which order (one alone: its figures only, no comparison)")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first is warm-up)")
    root = Path(args.workdir or tempfile.mkdtemp(prefix="rlhfctl-bench-lora-"))
    root.mkdir(parents=True, exist_ok=True)
    load_at_start = os.getloadavg()[0]
    modes = args.modes.split(",")
    if len(modes) == 1:
        print(json.dumps(run(modes[0], args, root)), flush=True)
        return 0
    # Each run in a process of its own: a fresh Ray and vLLM engine, and one process never tears two down.
    runs = {}
    for mode in modes:
        done = subprocess.run([sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--modes",
                               mode, "--workdir", str(root)], stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            print(f"the {mode} run failed (exit {done.returncode})", file=sys.stderr)
            return 1
        runs[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(compare(runs, load_at_start)), flush=True)
    return 0


def compare(runs: dict, load_at_start: float) -> dict:
    """The summary line: both runs, LoRA's figures over full fine-tuning's, the target gain and the machine's load."""
    ratios = {k: round(runs["lora"][k] / runs["full"][k], 4) for k in
              ("trainable_share", "training_state_mb", "peak_rss_mb", "time_per_step_s", "time_train_s",
               "time_weight_sync_s", "sync_mb") if runs["full"][k]}
    return {"setting": "arithmetic demo, 1 vLLM engine, torch engine, fp32", **runs, "lora_over_full": ratios,
            "target_gain": 0.30, "cpu_cores": os.cpu_count(),
            "load_average_1m": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)}}

if __name__ == "__main__":
    sys.exit(main())
