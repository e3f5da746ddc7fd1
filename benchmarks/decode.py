"""HF `generate` against --torch-compile's sampler (rlhfctl/models/decode.py), on one batch of a rollout. One JSON line.

The batch is train_ppo.py's setting (a): the tiny Llama policy (hidden 256, 4 layers, vocab 2,000), 2 prompts x 8
samples, 32 new tokens at temperature 1, with --threads torch threads (2: what the in-driver run uses). Two ways,
each through rlhfctl.models.actor.generate as an actor worker calls it: `hf_generate` (HF generate, eager, its
dynamic cache) and `compiled` (--torch-compile: each distinct prompt's forward once, then the compiled one-token
step on a static cache). They take turns for --rounds rounds (so load from elsewhere falls on both alike); each
figure is the median of the rounds. `compile_s` is the compiled way's first call (tracing and C++ compilation;
inductor caches its kernels on disk, so a second run on the machine compiles faster).

    python benchmarks/decode.py [--rounds 15] [--threads 2]
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_ppo import SETTINGS, build_inputs  # noqa: E402 - the same policy and prompts (benchmarks/)

SAMPLES_PER_PROMPT = 8
NEW_TOKENS = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from rlhfctl.models.actor import generate, load_policy, load_tokenizer
    from rlhfctl.models.decode import CompiledSampler

    torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        policy, prompts, _ = build_inputs(Path(tmp), SETTINGS["a"], 1)
        texts = [json.loads(line)["input"] for line in prompts.read_text().splitlines()]
        batch = [t for t in texts[:SETTINGS["a"]] for _ in range(SAMPLES_PER_PROMPT)]
        tokenizer, model = load_tokenizer(str(policy)), load_policy(str(policy)).eval()
        samplers = {"hf_generate": None, "compiled": CompiledSampler(model)}
        compile_s: dict[str, float] = {}
        times: dict[str, list[float]] = {name: [] for name in samplers}

        def call(name: str) -> float:
            sampler = samplers[name]
            started = time.perf_counter()
            out = generate(model, tokenizer, batch, max_new_tokens=NEW_TOKENS, temperature=1.0, sampler=sampler)
            assert out.action_mask.shape[0] == len(batch)
            return time.perf_counter() - started

        for name in samplers:
            first = call(name)
            if samplers[name] is not None:
                compile_s[name] = round(first, 1)
        for _ in range(args.rounds):
            for name in samplers:
                times[name].append(call(name))
    median = {name: statistics.median(t) for name, t in times.items()}
    print(json.dumps({
        "benchmark": "decode", "setting": "a", "samples": len(batch), "new_tokens": NEW_TOKENS,
        "generate_s": {name: round(t, 4) for name, t in median.items()},
        "compiled_speedup": round(median["hf_generate"] / median["compiled"], 2), "compile_s": compile_s["compiled"], "rounds": args.rounds, "torch_threads": args.threads,
        "torch_version": torch.__version__, "cpu_cores": os.cpu_count(),
        "load_average_1m": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)},
    }))


if __name__ == "__main__":
    main()
