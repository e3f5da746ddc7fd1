"""Benchmark HF `generate` against a vLLM engine for train-ppo's rollouts: where each is faster, by policy size and
response length. One JSON line per (policy, response length), a last line with the crossover, and a plot.

A step on vLLM also pays for a weight sync that HF generate (on the actor itself) does not: `vllm_speedup` is HF's
seconds over vLLM's generation plus one reload of the policy's weights into the engine (`vllm_sync_s`, the
engine's side of a sync, which is most of it: benchmarks/weight_sync.py).

Each side runs as train-ppo runs it, on one CPU thread (a Ray worker's share): HF generate as an actor worker calls
it (rlhfctl.models.actor.generate over the whole batch), vLLM as an engine does (rlhfctl.rollout.engine.VLLMEngine,
eager, in-process). A batch is --prompts prompts x 8 samples at temperature 1; tiny random Llama policies (vocab
2,000) rarely stop early, so responses run to about the length asked. Each policy runs in a process of
its own, where the two backends take turns (so load from elsewhere falls on both alike); per length, the best of
--repeats timed calls after one warm-up call, which a burst of other load moves less than a mean.
`--rollout auto` (rlhfctl/rollout/choice.py) follows the line this prints.

    python benchmarks/rollout_crossover.py                              # the default grid, plot in docs/
    python benchmarks/rollout_crossover.py --sizes 128x4,256x4 --lengths 4,32
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
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
SAMPLES_PER_PROMPT = 8


def _policy(root: Path, size: str) -> tuple[Path, int]:
    """A tiny Llama of `size` = HIDDENxLAYERS (head_dim 64, or 32 below hidden 256) and its parameter count."""
    from rlhfctl.models.tiny import TinyArch, make_tiny_policy

    hidden, layers = (int(x) for x in size.split("x"))
    path = root / f"policy_{size}"
    if not (path / "config.json").is_file():
        make_tiny_policy(path, TinyArch(vocab_size=2000, hidden_size=hidden, num_layers=layers,
                                        num_heads=max(1, hidden // (64 if hidden >= 256 else 32))))
    import safetensors.torch

    params = sum(t.numel() for t in safetensors.torch.load_file(str(path / "model.safetensors")).values())
    return path, params


def _generators(policy: Path, lengths: list[int], prompts: int) -> dict[str, Callable[[int], None]]:
    """backend -> a call that generates the batch with `length` new tokens, both in this process, one thread."""
    import torch

    torch.set_num_threads(1)
    from rlhfctl.config import VLLMArgs, resolve
    from rlhfctl.config.slices import SamplingGroups
    from rlhfctl.models.actor import generate, load_policy, load_tokenizer
    from rlhfctl.rollout.engine import VLLMEngine

    texts = [f"Question {i}: what is {i} plus {3 * i % 17}? Answer:" for i in range(prompts)]
    model, tokenizer = load_policy(str(policy)).eval(), load_tokenizer(str(policy))
    batch = [t for t in texts for _ in range(SAMPLES_PER_PROMPT)]
    cfg = resolve("train-ppo", {"pretrain": str(policy), "prompt_data": "unused.jsonl", "remote_rm_url": "x.py",
                                "prompt_max_len": 64, "generate_max_len": max(lengths), "enforce_eager": True,
                                "vllm_gpu_memory_utilization": 0.02, "vllm_num_engines": 1})
    engine = VLLMEngine(SamplingGroups.of(cfg), cfg.slice(VLLMArgs))
    torch.set_num_threads(1)

    def hf(length: int) -> None:
        with torch.no_grad():
            generate(model, tokenizer, batch, max_new_tokens=length, temperature=1.0, prompt_max_len=64)

    def vllm(length: int) -> None:
        engine.sampling.rollout.generate_max_len = length
        engine.generate_samples(texts, [""] * prompts, SAMPLES_PER_PROMPT, 0, False, 0, 0)

    def vllm_sync(_: int) -> None:  # the engine's side of a sync: a tied head is sent too, as the actor does
        engine.begin_weight_stream()
        engine.push_weights(list(model.state_dict().items()))
        engine.end_weight_stream()

    return {"hf": hf, "vllm": vllm, "vllm_sync": vllm_sync}


def _time_both(policy: Path, lengths: list[int], prompts: int, repeats: int) -> dict[str, dict[int, float]]:
    """Best seconds of `repeats` calls per backend and response length, the two backends taking turns."""
    runs = _generators(policy, lengths, prompts)
    for run in runs.values():
        run(min(lengths))  # warm-up: lazy initialisation, first allocations
    best: dict[str, dict[int, float]] = {backend: {} for backend in runs}
    for length in lengths:
        for _ in range(repeats):
            for backend, run in runs.items():
                t0 = time.perf_counter()
                run(length)
                seconds = time.perf_counter() - t0
                best[backend][length] = min(seconds, best[backend].get(length, seconds))
    return best


def _measure(policy: Path, lengths: list[int], prompts: int, repeats: int) -> dict[str, dict[int, float]]:
    """_time_both in a process of its own (a vLLM engine per process): {backend: {length: seconds}}."""
    out = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps([str(policy), lengths, prompts, repeats])],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{policy.name} failed:\n{out.stderr[-3000:]}")
    best = json.loads(out.stdout.strip().splitlines()[-1])
    return {backend: {int(k): v for k, v in times.items()} for backend, times in best.items()}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for params in sorted({r["policy_params"] for r in rows}):
        mine = [r for r in rows if r["policy_params"] == params]
        ax.plot([r["new_tokens"] for r in mine], [r["vllm_speedup"] for r in mine], marker="o",
                label=f"{params / 1e6:.1f} M parameters")
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("response tokens")
    ax.set_ylabel("HF generate s / (vLLM generate + sync) s")
    ax.set_title("Rollout backends on one CPU thread (benchmarks/rollout_crossover.py)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="128x4,256x4,512x8,768x12", help="policies as HIDDENxLAYERS, comma-separated")
    parser.add_argument("--lengths", default="4,32,128,512", help="response lengths, comma-separated")
    parser.add_argument("--prompts", type=int, default=4, help=f"prompts per batch ({SAMPLES_PER_PROMPT} samples each)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "rollout_crossover.png")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one backend in this process
    args = parser.parse_args(argv)
    if args.one:
        policy, lengths, prompts, repeats = json.loads(args.one)
        print(json.dumps(_time_both(Path(policy), lengths, prompts, repeats)))
        return 0
    lengths = [int(x) for x in args.lengths.split(",")]
    root = Path(tempfile.mkdtemp(prefix="rlhfctl-crossover-"))
    rows = []
    for size in args.sizes.split(","):
        policy, params = _policy(root, size)
        load = os.getloadavg()[0]
        best = _measure(policy, lengths, args.prompts, args.repeats)
        hf, vllm, sync = best["hf"], best["vllm"], best["vllm_sync"]
        for length in lengths:
            row = {"policy": size, "policy_params": params, "new_tokens": length,
                   "completions": args.prompts * SAMPLES_PER_PROMPT, "hf_s": round(hf[length], 4),
                   "vllm_s": round(vllm[length], 4), "vllm_sync_s": round(sync[length], 4),
                   "vllm_speedup": round(hf[length] / (vllm[length] + sync[length]), 2),
                   "threads": 1, "load_average_1m": {"start": round(load, 2), "end": round(os.getloadavg()[0], 2)}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    faster = {f"{r['policy']}@{r['new_tokens']}": "vllm" if r["vllm_speedup"] > 1 else "hf" for r in rows}
    print(json.dumps({"crossover": faster}), flush=True)
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
