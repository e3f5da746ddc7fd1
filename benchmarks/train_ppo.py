"""Benchmark train-ppo: completions/s and time per phase, one JSON line per setting.

The issue's settings: a policy of hidden 256, 4 layers, 4 heads, vocab ~2,000; 32 new tokens; group_norm with a
reference model for the KL term; one epoch per rollout batch; reward from a reward_func.py;
(a) 2 prompts x 8 samples per step, (b) 64 prompts x 8 samples. The run is the real `train_ppo` (local Ray, the
actor/ref workers, the engine of --engine); the rate is measured over the steps after the first (warm-up), from the
metrics the run writes: `completions_per_s` is all timed samples over all timed seconds, `..._median_step` the
median of the steps' rates, which a burst of other load on the machine moves less. `torch_threads_per_worker` is
read back from the actor workers (metrics.jsonl's actor_torch_threads). Without vLLM the actor workers generate
with their own weights and there is no weight sync: `time_weight_sync_s` is then null (where a run logs
time/weight_sync, its mean). With --rollout both (the default) each setting runs with HF generate and with vLLM
engines (--vllm-engines, one CPU per worker), and a line compares generation time and completions/s. The vLLM
engines run once per --vllm-tensor-parallel-sizes entry (default 1 and 2: each engine one worker, then two worker
processes holding half the weights each), and a line compares generation and weight-sync time of TP=N vs TP=1.
TRL's GRPOTrainer on setting (a): benchmarks/trl_grpo.py.

`--setting demo` runs the README demo's training (examples/arithmetic/train_reward_func_file.yaml: 32 prompts x 8,
the shipped 1 M-parameter policy, 4 new tokens; --actor-workers of them), the reward_func.py called in the driver
instead of over HTTP.
`--profile` runs train-ppo with --profile and adds `profile`: per phase its wall seconds, its share of the step,
the busiest worker's compute and the rest (Ray calls, serialization, waiting), and each role's compute per method
(tokenization included), all means over the timed steps.

    python benchmarks/train_ppo.py                      # both settings: HF, vLLM TP=1 and vLLM TP=2
    python benchmarks/train_ppo.py --setting a --rollout vllm --vllm-tensor-parallel-sizes 1,2
    python benchmarks/train_ppo.py --setting a --actor-workers 2 --engine deepspeed
    python benchmarks/train_ppo.py --setting demo --profile --vllm-engines 1   # where a demo step's time goes
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
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REWARD = '''
def reward_func(queries, prompts, labels, **kwargs):
    responses = [q[len(p):] for q, p in zip(queries, prompts)]
    return [r.count("e") / max(1, len(r)) for r in responses]
'''

SETTINGS = {"a": 2, "b": 64, "demo": 32}  # prompts per step; 8 samples each
ARITH = Path(__file__).resolve().parents[1] / "examples" / "arithmetic"
# vLLM engines (one CPU each here): a KV cache of ~1% of RAM each, no torch.compile warm-up
VLLM_OPTIONS = {"vllm_gpu_memory_utilization": 0.01, "enforce_eager": True}


def build_inputs(root: Path, prompts_per_step: int, steps: int) -> tuple[Path, Path, Path]:
    from rlhfctl.models.tiny import TinyArch, make_tiny_policy

    policy = root / "policy"
    if not (policy / "config.json").is_file():
        make_tiny_policy(policy, TinyArch(vocab_size=2000, hidden_size=256, num_layers=4, num_heads=4))
    prompts = root / f"prompts_{prompts_per_step}.jsonl"
    rows = [{"input": f"Question {i}: what is {i} plus {i * 3 % 17}? Answer:"} for i in range(prompts_per_step * steps)]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reward = root / "reward_func.py"
    reward.write_text(REWARD)
    return policy, prompts, reward


def vllm_options(args: argparse.Namespace, rollout: str, tp: int) -> dict:
    return VLLM_OPTIONS | {"vllm_num_engines": args.vllm_engines, "vllm_tensor_parallel_size": tp} \
        if rollout == "vllm" else {}


def demo_config(args: argparse.Namespace, out: Path, rollout: str, tp: int) -> Any:
    """The README demo's training options, the reward_func.py called in the driver, --steps steps."""
    from rlhfctl.config import resolve

    return resolve("train-ppo", {
        "pretrain": str(ARITH / "policy"), "prompt_data": str(ARITH / "train.jsonl"),
        "eval_dataset": str(ARITH / "test.jsonl"), "remote_rm_url": str(ARITH / "reward_func.py"),
        "save_path": str(out), "ckpt_path": str(out / "ckpt"), "num_episodes": 1, "max_samples": 32 * args.steps,
        "eval_steps": 10_000, "profile": args.profile, "actor_num_gpus_per_node": args.actor_workers,
        **vllm_options(args, rollout, tp),
    }, config_file=ARITH / "train_reward_func_file.yaml")


def run_setting(name: str, args: argparse.Namespace, root: Path, rollout: str = "hf", tp: int = 1) -> dict:
    from rlhfctl.ppo.run import train_ppo

    n_prompts = SETTINGS[name]
    out = root / f"out_{name}_{time.time_ns()}"
    cfg = demo_config(args, out, rollout, tp) if name == "demo" else setting_config(name, args, root, out, rollout, tp)
    load_at_start = os.getloadavg()[0]
    started = time.perf_counter()
    train_ppo(cfg)
    wall = time.perf_counter() - started
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "time/step" in s]  # evaluation-only lines carry no step
    timed = steps[1:] or steps  # the first step pays for lazy initialisation
    total = sum(s["time/step"] for s in timed)
    phases = {p: sum(s.get(f"time/{p}", 0.0) for s in timed) / len(timed)
              for p in ("generate", "reward", "make_experience", "train")}
    return {
        "setting": name, "rollout": rollout, "prompts_per_step": n_prompts, "samples_per_prompt": 8,
        "new_tokens": cfg.generate_max_len,
        "completions_per_s": round(sum(s["samples"] for s in timed) / total, 2),
        "completions_per_s_median_step": round(statistics.median(s["samples"] / s["time/step"] for s in timed), 2),
        "time_per_step_s": round(total / len(timed), 4),
        "time_per_step_range_s": [round(min(s["time/step"] for s in timed), 3),
                                  round(max(s["time/step"] for s in timed), 3)],
        **{f"time_{k}_s": round(v, 4) for k, v in phases.items()}, **weight_sync(timed),
        "mean_response_tokens": round(sum(s["response_length"] for s in timed) / len(timed), 1),
        **({"vllm_engines": args.vllm_engines, "vllm_tensor_parallel_size": tp, "rollout_logprob_diff_max": max(
            s["rollout/logprob_diff_max"] for s in timed)} if rollout == "vllm" else {}),
        **({"profile": profile_summary(timed)} if args.profile else {}),
        "time_first_step_s": round(steps[0]["time/step"], 2), "torch_compile": cfg.torch_compile,
        "steps_timed": len(timed), "engine": cfg.engine, "actor_workers": cfg.actor_num_gpus_per_node,
        "roles_in": "driver" if "in_driver" in json.loads((out / "placement.json").read_text()) else "ray",
        "ref_workers": cfg.ref_num_gpus_per_node if cfg.init_kl_coef else 0, "colocate_actor_ref": args.colocate,
        "kl": "loss (k3)" if cfg.use_kl_loss else f"reward ({cfg.kl_estimator})",
        "torch_threads_per_worker": int(timed[-1]["actor_torch_threads"]),
        "cpu_cores": os.cpu_count(), "wall_s_including_startup": round(wall, 1),
        "load_average_1m": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)},
    }


def profile_summary(timed: list[dict]) -> dict:
    """Means over the timed steps of --profile's figures, per phase and per role (see the module's docstring)."""
    from rlhfctl.ppo.profile import phase_walls

    def mean(values: list[float]) -> float:
        return round(sum(values) / len(timed), 4)

    step = sum(s["time/step"] for s in timed) / len(timed)
    walls = [phase_walls(s) for s in timed]
    phases = {}
    for phase in sorted({p for w in walls for p in w}):
        wall = mean([w.get(phase, 0.0) for w in walls])
        overhead = mean([s.get(f"profile/overhead/{phase}", 0.0) for s in timed])
        phases[phase] = {"wall_s": wall, "share_of_step": round(wall / step, 3),
                         "compute_s": round(wall - overhead, 4), "overhead_s": overhead}
    keys = sorted({k for s in timed for k in s if k.startswith("profile/") and "/overhead/" not in k})
    roles: dict[str, dict[str, float]] = {}
    for key in keys:
        _, role, method = key.split("/", 2)
        roles.setdefault(role, {})[method] = mean([s.get(key, 0.0) for s in timed])
    accounted = sum(p["wall_s"] for p in phases.values())
    return {"step_s": round(step, 4), "phases": phases, "driver_rest_s": round(step - accounted, 4),
            "compute_by_role_s": roles}


def setting_config(name: str, args: argparse.Namespace, root: Path, out: Path, rollout: str, tp: int) -> Any:
    """The issue's settings (a) and (b)."""
    from rlhfctl.config import resolve

    n_prompts = SETTINGS[name]
    samples = n_prompts * 8
    policy, prompts, reward = build_inputs(root, n_prompts, args.steps)
    micro_train = min(samples // args.actor_workers, args.micro_train_batch_size)
    return resolve("train-ppo", {
        "pretrain": str(policy), "prompt_data": str(prompts), "remote_rm_url": str(reward),
        "save_path": str(out), "ckpt_path": str(out / "ckpt"),
        "advantage_estimator": "group_norm", "init_kl_coef": 0.01, "max_epochs": 1,
        "rollout_batch_size": n_prompts, "n_samples_per_prompt": 8,
        "micro_rollout_batch_size": max(1, min(n_prompts // args.actor_workers, args.micro_rollout_prompts)),
        "generate_max_len": 32, "prompt_max_len": 64, "train_batch_size": samples,
        "micro_train_batch_size": micro_train, "engine": args.engine, "zero_stage": args.zero_stage,
        "actor_num_gpus_per_node": args.actor_workers, "ref_num_gpus_per_node": args.actor_workers,
        "colocate_actor_ref": args.colocate, "actor_learning_rate": 1e-5, "seed": 0,
        "profile": args.profile, **vllm_options(args, rollout, tp),
        **({"use_kl_loss": True, "kl_estimator": "k3"} if args.kl_loss else {}),
        **({"torch_compile": True} if args.torch_compile else {}),
    })


def weight_sync(timed: list[dict]) -> dict:
    """time_weight_sync_s as logged (time/weight_sync), or null with the reason when the run has none."""
    logged = [s["time/weight_sync"] for s in timed if s.get("time/weight_sync") is not None]
    if logged:
        return {"time_weight_sync_s": round(sum(logged) / len(logged), 4)}
    return {"time_weight_sync_s": None,
            "time_weight_sync_note": "no weight sync: HF generate on the actor workers (no vLLM engines)"}


def comparisons(name: str, rows: list[dict]) -> list[dict]:
    """vLLM (its first TP size) vs HF generate, and each further TP size vs the first, where both ran."""
    hf = [r for r in rows if r["rollout"] == "hf"]
    engines = [r for r in rows if r["rollout"] == "vllm"]
    out = []
    if hf and engines:
        h, v = hf[0], engines[0]
        out.append({
            "setting": name, "comparison": "vllm vs hf",
            "time_generate_s": {"hf": h["time_generate_s"], "vllm": v["time_generate_s"]},
            "generate_speedup": round(h["time_generate_s"] / v["time_generate_s"], 2),
            "completions_per_s": {"hf": h["completions_per_s"], "vllm": v["completions_per_s"]},
            "step_speedup": round(v["completions_per_s"] / h["completions_per_s"], 2),
        })
    for other in engines[1:]:
        base = engines[0]
        a, b = (f"tp{r['vllm_tensor_parallel_size']}" for r in (base, other))
        out.append({
            "setting": name, "comparison": f"vllm {b} vs {a}", "vllm_engines": base["vllm_engines"],
            "time_generate_s": {a: base["time_generate_s"], b: other["time_generate_s"]},
            "generate_speedup": round(base["time_generate_s"] / other["time_generate_s"], 2),
            "time_weight_sync_s": {a: base["time_weight_sync_s"], b: other["time_weight_sync_s"]},
            "completions_per_s": {a: base["completions_per_s"], b: other["completions_per_s"]},
            "rollout_logprob_diff_max": {a: base["rollout_logprob_diff_max"], b: other["rollout_logprob_diff_max"]},
        })
    return out


def _sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected TP sizes such as 1,2 (got {text!r})")
    return sizes


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=["a", "b", "demo", "both"], default="both",
                        help="both: (a) and (b); demo: the README demo's training")
    parser.add_argument("--steps", type=int, default=6, help="rollout steps per setting (the first is warm-up)")
    parser.add_argument("--engine", choices=["torch", "deepspeed"], default="torch")
    parser.add_argument("--zero-stage", type=int, default=0)
    parser.add_argument("--actor-workers", type=int, default=2, help="data-parallel actor (and ref) workers")
    parser.add_argument("--colocate", action=argparse.BooleanOptionalAction, default=True,
                        help="put each ref worker on its actor worker's CPU (--colocate-actor-ref)")
    parser.add_argument("--micro-rollout-prompts", type=int, default=8, help="prompts per generate() call")
    parser.add_argument("--micro-train-batch-size", type=int, default=32)
    parser.add_argument("--rollout", choices=["hf", "vllm", "both"], default="both",
                        help="HF generate on the actor workers, vLLM engines, or both in one run (compared)")
    parser.add_argument("--vllm-engines", type=int, default=2, help="vLLM engines with --rollout vllm/both")
    parser.add_argument("--vllm-tensor-parallel-sizes", type=_sizes, default=[1, 2],
                        help="comma-separated TP sizes; the vLLM rollout runs once per size (compared to the first)")
    parser.add_argument("--kl-loss", action="store_true",
                        help="the KL to the reference in the actor's loss (--use-kl-loss, k3: TRL GRPO's objective) "
                             "instead of the reward; with HF generate the actor's experience forward is then left out")
    parser.add_argument("--torch-compile", action="store_true",
                        help="run train-ppo with --torch-compile (the policy's and reference's forward and backward "
                             "compiled; HF rows also decode with a compiled step; the first, untimed step compiles)")
    parser.add_argument("--profile", action="store_true",
                        help="run with train-ppo --profile and add where each step's time goes")
    parser.add_argument("--workdir", default=None, help="keep inputs and outputs here (default: a temp folder)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="rlhfctl-bench-ppo-"))
    root.mkdir(parents=True, exist_ok=True)
    rollouts = [("hf", 1)] if args.rollout in ("hf", "both") else []
    if args.rollout in ("vllm", "both"):
        rollouts += [("vllm", tp) for tp in args.vllm_tensor_parallel_sizes]
    for name in (["a", "b"] if args.setting == "both" else [args.setting]):
        rows = [run_setting(name, args, root, rollout, tp) for rollout, tp in rollouts]
        for row in rows:
            print(json.dumps(row), flush=True)
        for line in comparisons(name, rows):
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
