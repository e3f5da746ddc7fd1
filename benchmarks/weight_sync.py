"""Benchmark weight sync to a vLLM engine: one broadcast per tensor against buckets (rollout/sync_group.py), and
where the time goes. One JSON line.

One actor worker and one vLLM engine (one CPU each, as train-ppo places them here) on a local Ray; the actor holds
the policy of train_ppo.py's setting (a) (4.7 M parameters) or the demo's (--policy demo, 1.4 M). Syncs alternate
between the two ways (--repeats each), so load from elsewhere on the machine falls on both alike; per way the
median seconds of a whole sync as the driver sees it, and the busiest compute inside it (distributed/busy.py): the
actor gathering and sending (`broadcast_weights`), the engine receiving and reloading (`receive_weights`, most of
it vLLM's own reload and weight processing).

    python benchmarks/weight_sync.py [--policy a|demo] [--repeats 8]
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
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from train_ppo import ARITH, VLLM_OPTIONS, build_inputs  # noqa: E402  (benchmarks/)

WAYS = {"per_tensor": 0, "bucketed": None}  # bucket bytes: 0 puts each tensor alone; None: the default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", choices=["a", "demo"], default="a")
    parser.add_argument("--repeats", type=int, default=8, help="syncs per way (alternating)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    from rlhfctl.config import PlacementArgs, VLLMArgs, resolve
    from rlhfctl.config.slices import PolicyGroups, SamplingGroups
    from rlhfctl.distributed.placement import place, release
    from rlhfctl.distributed.roles import RoleGroup, get
    from rlhfctl.ppo.workers import PolicyWorker
    from rlhfctl.rollout.sync_group import BUCKET_BYTES
    from rlhfctl.rollout.vllm_rollout import VLLMRollout
    from rlhfctl.rollout.weight_sync import WeightSender

    root = Path(tempfile.mkdtemp(prefix="rlhfctl-bench-sync-"))
    policy = ARITH / "policy" if args.policy == "demo" else build_inputs(root, 2, 1)[0]
    cfg = resolve("train-ppo", {"pretrain": str(policy), "prompt_data": str(root / "unused.jsonl"),
                                "remote_rm_url": "reward.py", "vllm_num_engines": 1, **VLLM_OPTIONS})
    plan = place(cfg.slice(PlacementArgs), cfg.slice(VLLMArgs), ["actor", "vllm"])
    try:
        actor = RoleGroup("actor", plan, PolicyWorker, PolicyGroups.of(cfg), 1).wait_ready()
        rollout = VLLMRollout(SamplingGroups.of(cfg), cfg.slice(VLLMArgs), plan, actor, pad_token_id=0,
                              backend="gloo").wait_ready()
        groups = {"actor": actor, "vllm": rollout.engines}
        meta = get(actor.on(0, WeightSender.weight_meta))
        seconds: dict[str, list[float]] = {way: [] for way in WAYS}
        busy: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
        load_at_start = os.getloadavg()[0]
        for _ in range(args.repeats):
            for way, bucket_bytes in WAYS.items():
                get([f for g in groups.values() for f in g.busy_seconds()])  # forget what came before
                t0 = time.perf_counter()
                rollout.sync_weights(BUCKET_BYTES if bucket_bytes is None else bucket_bytes)
                seconds[way].append(time.perf_counter() - t0)
                per_role = {role: get(g.busy_seconds())[0] for role, g in groups.items()}
                busy[way].append({"actor_broadcast_weights": per_role["actor"].get("broadcast_weights", 0.0),
                                  "engine_receive_weights": per_role["vllm"].get("receive_weights", 0.0)})
        rows = {way: {"median_s": round(statistics.median(s), 4), "range_s": [round(min(s), 4), round(max(s), 4)],
                      **{k: round(statistics.median(b[k] for b in busy[way]), 4) for k in busy[way][0]}}
                for way, s in seconds.items()}
        print(json.dumps({
            "benchmark": "weight_sync", "policy": args.policy, "tensors": len(meta),
            "megabytes": round(sum(_nbytes(m) for m in meta) / 2**20, 2), **rows,
            "speedup_bucketed": round(rows["per_tensor"]["median_s"] / rows["bucketed"]["median_s"], 2),
            "repeats": args.repeats, "cpu_cores": os.cpu_count(),
            "load_average_1m": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)},
        }), flush=True)
    finally:
        release(plan)
    return 0


def _nbytes(meta: tuple[str, str, list[int]]) -> int:
    import math

    import torch

    return math.prod(meta[2]) * getattr(torch, meta[1]).itemsize


if __name__ == "__main__":
    sys.exit(main())
