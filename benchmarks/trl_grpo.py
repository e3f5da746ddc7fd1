"""TRL's GRPOTrainer on train_ppo.py's setting (a) or (b): the reference for rlhfctl's completions/s. One JSON line.

The same tiny policy (rlhfctl.models.tiny, hidden 256, 4 layers, 4 heads, vocab 2,000), the same prompts and
reward function as `benchmarks/train_ppo.py --setting a`: 2 prompts x 8 samples per step (--setting b: 64 prompts
x 8, which TRL generates and trains on as one batch of 512), 32 new tokens, a
reference model for the KL term (beta = init_kl_coef = 0.01), one update per rollout batch, lr 1e-5, fp32, no
gradient checkpointing. TRL runs in this one process with --threads torch threads (train_ppo.py: 2 workers x 1
thread). The rates are measured over the steps after the first (warm-up), as train_ppo.py measures them. TRL is an optional
dependency: `pip install -e ".[bench]"`.

    python benchmarks/trl_grpo.py [--steps 6] [--threads 2]
    python benchmarks/trl_grpo.py --vs-train-ppo        # train-ppo's setting (a) too, three ways, ratios
    python benchmarks/trl_grpo.py --setting b --steps 4 --vs-train-ppo   # 64 prompts x 8
    python benchmarks/trl_grpo.py --vs-train-ppo --torch-compile   # and both compiled

With --vs-train-ppo the same invocation then runs train_ppo.py's setting three ways: HF generate on 2 Ray actor
workers of one thread each ("hf"), the same with one vLLM engine ("vllm"), and HF generate with one actor and one
reference in this process, as TRL runs (--actor-workers 1: the roles run in the driver; "hf_in_driver"), and that
again with TRL's objective, the KL in the loss (k3) instead of the reward ("hf_in_driver_kl_loss"; one update per
generation, so as TRL, train-ppo then leaves out the actor's forward before training). A last line gives
train-ppo's completions/s over TRL's for each. With --torch-compile TRL runs a second time with torch_compile=True
(HF Trainer compiles the model, so also the forward HF generate calls), and train-ppo's last row again with
--torch-compile ("hf_in_driver_kl_loss_compiled"); both first steps compile and are not timed, and a TRL step that
compiles again is timed as it comes (`completions_per_s_median_step` is the figure a recompile moves less).
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

from train_ppo import REWARD, SETTINGS, build_inputs, make_parser, run_setting  # the same setting (benchmarks/)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SAMPLES_PER_PROMPT = 8
MISSING = ("benchmarks/trl_grpo.py needs TRL, an optional benchmark dependency: "
           "pip install -e \".[bench]\" (or pip install trl)")


def trl_version() -> str | None:
    """TRL's version, or None when it is not installed (checked without importing it: it imports torch)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trl")
    except PackageNotFoundError:
        return None


def reward_for_trl() -> Any:
    """train_ppo.py's reward_func, called the way TRL calls reward functions (prompts, completions)."""
    namespace: dict[str, Any] = {}
    exec(REWARD, namespace)  # noqa: S102 - our own constant source, shared with train_ppo.py
    reward_func = namespace["reward_func"]

    def letter_e(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        return reward_func([p + c for p, c in zip(prompts, completions)], prompts, [""] * len(prompts))

    return letter_e


def run(args: argparse.Namespace, root: Path, torch_compile: bool = False) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(args.threads)
    n_prompts = SETTINGS[args.setting]
    policy, prompts, _ = build_inputs(root, n_prompts, args.steps)
    rows = [json.loads(line) for line in prompts.read_text().splitlines()]
    dataset = Dataset.from_list([{"prompt": r["input"]} for r in rows])
    samples = n_prompts * SAMPLES_PER_PROMPT

    class StepTimer(TrainerCallback):
        """Wall time of each optimizer step, generation and reward included (TRL generates inside the step)."""

        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_step_begin(self, *_: Any, **__: Any) -> None:
            self._start = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            self.times.append(time.perf_counter() - self._start)

    config = GRPOConfig(
        output_dir=str(root / "trl_out"), per_device_train_batch_size=samples, gradient_accumulation_steps=1,
        num_generations=SAMPLES_PER_PROMPT, max_completion_length=32, temperature=1.0, beta=0.01,
        num_iterations=1, learning_rate=1e-5, max_steps=args.steps, logging_steps=1, save_strategy="no",
        report_to="none", bf16=False, gradient_checkpointing=False, use_cpu=True, seed=0,
        shuffle_dataset=False, dataloader_num_workers=0, disable_tqdm=True, torch_compile=torch_compile,
    )
    timer = StepTimer()
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy), reward_funcs=reward_for_trl(),
                          args=config, train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(policy),
                          callbacks=[timer])
    load_at_start = os.getloadavg()[0]
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    timed = timer.times[1:] or timer.times  # the first step pays for lazy initialisation
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    return {
        "benchmark": "trl_grpo", "setting": args.setting, "prompts_per_step": n_prompts,
        "samples_per_prompt": SAMPLES_PER_PROMPT, "new_tokens": 32,
        "completions_per_s": round(samples * len(timed) / sum(timed), 2),
        "completions_per_s_median_step": round(statistics.median(samples / t for t in timed), 2),
        "time_per_step_s": round(sum(timed) / len(timed), 4),
        "time_per_step_range_s": [round(min(timed), 3), round(max(timed), 3)], "steps_timed": len(timed),
        "mean_response_tokens": round(sum(lengths[1:] or lengths) / max(1, len(lengths[1:] or lengths)), 1),
        "beta": config.beta, "loss_type": config.loss_type, "torch_compile": torch_compile,
        "time_first_step_s": round(timer.times[0], 2), "trl_version": trl_version(),
        "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(), "processes": 1,
        "cpu_cores": os.cpu_count(), "wall_s_including_startup": round(wall, 1),
        "load_average_1m": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps (the first is warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the one TRL process")
    parser.add_argument("--vs-train-ppo", action="store_true",
                        help="run train_ppo.py's setting in this invocation too and print the ratios")
    parser.add_argument("--setting", choices=["a", "b"], default="a", help="(a) 2 prompts x 8, (b) 64 prompts x 8")
    parser.add_argument("--torch-compile", action="store_true",
                        help="also TRL with torch_compile=True and, with --vs-train-ppo, train-ppo --torch-compile")
    parser.add_argument("--workdir", default=None, help="keep inputs and outputs here (default: a temp folder)")
    args = parser.parse_args(argv)
    if args.steps < 2 or args.threads < 1:
        parser.error("--steps must be at least 2 (the first is warm-up) and --threads at least 1")
    if trl_version() is None:
        print(MISSING, file=sys.stderr)
        return 2
    root = Path(args.workdir or tempfile.mkdtemp(prefix="rlhfctl-bench-trl-"))
    root.mkdir(parents=True, exist_ok=True)
    trl = run(args, root)
    print(json.dumps(trl), flush=True)
    trl_compiled = run(args, root, torch_compile=True) if args.torch_compile else None
    if trl_compiled is not None:
        print(json.dumps(trl_compiled), flush=True)
    if args.vs_train_ppo:
        common = ["--setting", args.setting, "--steps", str(args.steps), "--vllm-engines", "1"]
        ours, in_driver = make_parser().parse_args(common), make_parser().parse_args(common + ["--actor-workers", "1"])
        kl_loss = make_parser().parse_args(common + ["--actor-workers", "1", "--kl-loss"])
        rows = {"hf": run_setting(args.setting, ours, root, "hf"), "vllm": run_setting(args.setting, ours, root, "vllm"),
                "hf_in_driver": run_setting(args.setting, in_driver, root, "hf"),
                "hf_in_driver_kl_loss": run_setting(args.setting, kl_loss, root, "hf")}
        if args.torch_compile:
            compiled = make_parser().parse_args(common + ["--actor-workers", "1", "--kl-loss", "--torch-compile"])
            rows["hf_in_driver_kl_loss_compiled"] = run_setting(args.setting, compiled, root, "hf")
        for row in rows.values():
            print(json.dumps(row), flush=True)
        print(json.dumps({"setting": args.setting, "comparison": "train-ppo vs TRL GRPOTrainer", **{
            f"ratio_{name}": round(row["completions_per_s"] / trl["completions_per_s"], 2)
            for name, row in rows.items()}, **({
                "ratio_compiled_vs_trl_compiled_median_step": round(
                    rows["hf_in_driver_kl_loss_compiled"]["completions_per_s_median_step"]
                    / trl_compiled["completions_per_s_median_step"], 2)} if trl_compiled and args.vs_train_ppo else {})}),
            flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
