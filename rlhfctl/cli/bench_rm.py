"""`rlhfctl bench-rm`: throughput and latency of a reward server, or of any reward source."""

from __future__ import annotations

from rlhfctl.config import BenchRMConfig

HELP = (
    "Measure a reward server's throughput and latency under load: a running --url, or a serve-rm started for the "
    "run from --reward-pretrain/--reward-func (on a free loopback port, stopped afterwards), or --in-process with "
    "no HTTP. Closed loop at each --concurrency, or Poisson arrivals with --request-rate. Reports requests/s, "
    "samples/s, tokens/s, latency mean/p50/p90/p99 and errors by kind (http_<status>, timeout, connection, "
    "malformed). Exit codes: 0 done; 1 a level's error rate is above --max-error-rate, or the target is "
    "unreachable or failed to start; 2 bad options or data."
)
EXAMPLES = [
    "rlhfctl bench-rm --url http://127.0.0.1:5000/get_reward --concurrency 1,8,32 --texts-per-request 4",
    "rlhfctl bench-rm --reward-pretrain ./rm --concurrency 1,8,32,64 --num-requests 500 --plot rm.png",
    "rlhfctl bench-rm --reward-func examples/reward_func.py --in-process --duration 10 --json",
    "rlhfctl bench-rm --url http://rm:5000 --request-rate 50 --duration 30 --max-error-rate 0.01 --output rm.json",
]


def run(cfg: BenchRMConfig) -> int:
    import json

    from rich.console import Console

    from rlhfctl.bench.report import (
        ProgressBar, check_writable, render_table, report_error_rate, table_console, write_json,
    )
    from rlhfctl.bench.runner import benchmark

    check_writable(cfg.output, "--output")
    check_writable(cfg.plot, "--plot")
    if cfg.plot:
        from rlhfctl.bench.plot import require_matplotlib

        require_matplotlib()
    err = Console(stderr=True)
    if cfg.url is None and not cfg.in_process:
        err.print("[dim]starting serve-rm on a free loopback port...[/]")
    with ProgressBar(err) as bar:
        result = benchmark(cfg, bar)
    if cfg.json_output:
        print(json.dumps(result.to_dict()))
        for warning in result.warnings:
            err.print(f"Warning: {warning}", style="yellow", markup=False, highlight=False)
    else:
        render_table(result, table_console())
    if cfg.output:
        write_json(result, cfg.output)
    if cfg.plot:
        from rlhfctl.bench.plot import plot

        plot(result, cfg.plot)
    return 1 if report_error_rate(result, cfg.max_error_rate, err) else 0
