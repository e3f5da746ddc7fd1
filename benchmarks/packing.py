"""Benchmark --packing-samples and --use-dynamic-batch: PPO training time on samples of mixed lengths, one JSON line.

The real actor worker (rlhfctl.ppo.workers.PolicyWorker, torch engine, in this process, no Ray) on train_ppo.py's
policy (hidden 256, 4 layers, 4 heads, vocab 2,000) trains one batch of `--rows` samples whose lengths vary
`--max-len / --min-len` times (prompt + response, uniform), one optimiser step per batch, in four ways:

- padded:         --micro-train-batch-size rows per forward, padded to the longest prompt + longest response;
- packed:         the same micro-batches, each packed into one row without padding (--packing-samples);
- dynamic:        token-budget micro-batches (--use-dynamic-batch, --train-max-tokens-per-gpu), padded;
- dynamic_packed: token-budget micro-batches, packed.

Each mode's `train_s` is the median over `--repeats` timed passes (after one warm-up) of `PolicyWorker.train`
(`train_s_min` the fastest, what other load on the machine inflates least), and `log_probs_s` the same for the
rollout forward of make_experience (`PolicyWorker.log_probs`, the budget there is
--rollout-max-tokens-per-gpu = the training one). `grad_norm` shows the update is the same one: the dynamic modes
give the gradient of the whole batch at once, whatever the grouping; padded and packed share a grouping. Speed-ups
are padded's time over each mode's.

    python benchmarks/packing.py
    python benchmarks/packing.py --rows 64 --min-len 32 --max-len 512 --threads 2
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = {
    "padded": {},
    "packed": {"packing_samples": True},
    "dynamic": {"use_dynamic_batch": True},
    "dynamic_packed": {"use_dynamic_batch": True, "packing_samples": True},
}


def mixed_experience(rows: int, min_len: int, max_len: int, vocab: int, seed: int):
    """`rows` samples, prompt 1/4 and response 3/4 of a total length uniform in [min_len, max_len], laid out as
    train-ppo lays them out (left-padded prompts, right-padded responses)."""
    import torch

    from rlhfctl.ppo.experience import Experience

    gen = torch.Generator().manual_seed(seed)
    totals = torch.randint(min_len, max_len + 1, (rows,), generator=gen)
    prompts = (totals // 4).clamp(min=1)
    responses = totals - prompts
    width_p, width_a = int(prompts.max()), int(responses.max())
    seqs = torch.randint(3, vocab, (rows, width_p + width_a), generator=gen)
    cols = torch.arange(width_p + width_a)
    attn = ((cols >= width_p - prompts[:, None]) & (cols < width_p + responses[:, None])).long()
    seqs = seqs.masked_fill(attn == 0, 0)
    act = attn[:, width_p:].clone()
    zeros = torch.zeros(rows, width_a)
    return Experience(seqs, attn, act, log_probs=zeros.clone(), rewards=torch.zeros(rows),
                      advantages=torch.randn(rows, width_a, generator=gen) * act), totals


def timed(fn, repeats: int) -> tuple[list[float], object]:
    result = fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def run_mode(name: str, args: argparse.Namespace, policy: Path, experience) -> dict:
    import torch

    from rlhfctl.config import TrainPPOConfig
    from rlhfctl.ppo.workers import PolicyWorker

    cfg = TrainPPOConfig(pretrain=str(policy), prompt_data="unused.jsonl", remote_rm_url="unused.py", engine="torch",
                         micro_train_batch_size=args.micro_train_batch_size, train_batch_size=args.rows,
                         micro_rollout_batch_size=args.micro_train_batch_size, n_samples_per_prompt=1,
                         train_max_tokens_per_gpu=args.max_tokens, lr_warmup_ratio=0.0, **MODES[name])
    torch.manual_seed(0)
    worker = PolicyWorker(cfg, total_updates=10**6)
    log_probs_s, old = timed(lambda: worker.log_probs(experience.sequences, experience.attention_mask,
                                                      experience.num_actions), args.repeats)
    experience.log_probs = old.detach() * experience.action_mask
    step = iter(range(10**6))
    train_s, metrics = timed(lambda: worker.train(experience, step=next(step)), args.repeats)
    return {"train_s": round(statistics.median(train_s), 3), "train_s_min": round(min(train_s), 3),
            "log_probs_s": round(statistics.median(log_probs_s), 3), "log_probs_s_min": round(min(log_probs_s), 3),
            "grad_norm": round(float(metrics.get("grad_norm", float("nan"))), 6)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=32, help="samples per batch (one optimiser step)")
    parser.add_argument("--min-len", type=int, default=48, help="shortest prompt + response, tokens")
    parser.add_argument("--max-len", type=int, default=384, help="longest prompt + response, tokens")
    parser.add_argument("--micro-train-batch-size", type=int, default=8, help="rows per micro-batch (fixed modes)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="token budget of the dynamic modes (default: micro-batch size x mean length)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per mode, after one warm-up")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a busy 2-core machine 2 threads run far slower)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    parser.add_argument("--workdir", default=None, help="keep the policy here (default: a temp folder)")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for what, value, low in (("--rows", args.rows, 1), ("--min-len", args.min_len, 2), ("--repeats", args.repeats, 1),
                             ("--threads", args.threads, 1),
                             ("--micro-train-batch-size", args.micro_train_batch_size, 1)):
        if value < low:
            parser.error(f"{what} must be >= {low}, got {value}")
    if args.max_len < args.min_len:
        parser.error(f"--max-len ({args.max_len}) must be >= --min-len ({args.min_len})")
    if args.max_tokens is not None and args.max_tokens < 1:
        parser.error(f"--max-tokens must be >= 1, got {args.max_tokens}")
    if unknown := [m for m in modes if m not in MODES]:
        parser.error(f"--modes: unknown {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if args.rows % args.micro_train_batch_size:
        parser.error("--rows must be a multiple of --micro-train-batch-size (one optimiser step per batch)")

    import torch

    from rlhfctl.models.tiny import TinyArch, make_tiny_policy

    torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        policy = root / "policy"
        if not (policy / "config.json").is_file():
            make_tiny_policy(policy, TinyArch(vocab_size=2000, hidden_size=256, num_layers=4, num_heads=4))
        vocab = json.loads((policy / "config.json").read_text())["vocab_size"]
        experience, totals = mixed_experience(args.rows, args.min_len, args.max_len, vocab, seed=0)
        if args.max_tokens is None:
            args.max_tokens = int(args.micro_train_batch_size * float(totals.float().mean()))
        results = {}
        for name in modes:
            results[name] = run_mode(name, args, policy, experience)
    real = int(totals.sum())
    padded_tokens = args.rows * int(experience.sequences.shape[1])
    line = {
        "benchmark": "packing",
        "rows": args.rows, "micro_train_batch_size": args.micro_train_batch_size, "max_tokens": args.max_tokens,
        "length": {"min": int(totals.min()), "max": int(totals.max()), "mean": round(float(totals.float().mean()), 1),
                   "max_over_min": round(int(totals.max()) / int(totals.min()), 2)},
        "real_tokens": real, "padded_tokens_whole_batch": padded_tokens,
        "modes": results,
        "speedup_train_vs_padded": {m: round(results["padded"]["train_s"] / r["train_s"], 2)
                                    for m, r in results.items()} if "padded" in results else None,
        "speedup_log_probs_vs_padded": {m: round(results["padded"]["log_probs_s"] / r["log_probs_s"], 2)
                                        for m, r in results.items()} if "padded" in results else None,
        "speedup_train_min_vs_padded": {m: round(results["padded"]["train_s_min"] / r["train_s_min"], 2)
                                        for m, r in results.items()} if "padded" in results else None,
        "torch_threads": torch.get_num_threads(), "repeats": args.repeats,
        "load_average_1m": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)},
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
