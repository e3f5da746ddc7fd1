"""How bench-rm shows a run: a rich progress bar while it runs, a table at the end, JSON for machines."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rlhfctl.bench.loadgen import LevelRun
from rlhfctl.bench.runner import BenchResult
from rlhfctl.errors import RlhfctlError, UsageError


def check_writable(path: Optional[str], flag: str) -> None:
    """Fail before the run, not after it, when an output file cannot be written."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; give a file name")
    if not target.parent.is_dir():
        raise UsageError(f"{flag} {path}: the folder {target.parent} does not exist")


def write_json(result: BenchResult, path: str) -> None:
    try:
        Path(path).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    except OSError as exc:
        raise RlhfctlError(f"--output {path}: cannot write: {exc.strerror or exc}") from None


def report_error_rate(result: BenchResult, limit: float, console: Console) -> bool:
    """Say which levels failed more than --max-error-rate allows; True when any did (exit code 1)."""
    over = result.over_error_rate(limit)
    for lv in over:
        kinds = ", ".join(f"{k}: {v}" for k, v in lv.errors.items())
        console.print(f"[bold red]Error:[/] concurrency {lv.concurrency}: {lv.error_rate:.1%} of requests failed "
                      f"({escape(kinds)}), above --max-error-rate {limit:g}", highlight=False)
    return bool(over)


class ProgressBar:
    """A bar per concurrency level on stderr (requests done, or seconds with --duration); failures counted."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]concurrency {task.fields[concurrency]:>4}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}  {task.fields[sent]} sent  [red]{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            console=console, transient=False, disable=not console.is_terminal,
        )
        self._task: Any = None
        self._duration: Optional[float] = None
        self._clock = 0.0

    def __enter__(self) -> "ProgressBar":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def level_started(self, concurrency: int, num_requests: Optional[int], duration: Optional[float]) -> None:
        self._duration = duration
        self._clock = time.perf_counter()
        total = num_requests if duration is None else int(duration)
        self._task = self.progress.add_task("", total=total, concurrency=concurrency, sent=0, failed=0,
                                            unit="s" if duration else "requests")

    def tick(self, run: LevelRun) -> None:
        done = run.sent if self._duration is None else min(int(time.perf_counter() - self._clock),
                                                            int(self._duration))
        self.progress.update(self._task, completed=done, sent=run.sent, failed=run.failed)


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_table(result: BenchResult, console: Console) -> None:
    table = Table(title=f"bench-rm: {result.target}  (latency in ms)", title_justify="left",
                  caption=result.workload, caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("concurrency", "ok", "failed", "req/s", "samples/s", "tokens/s", "mean", "p50", "p90", "p99",
                 "client CPU"):
        table.add_column(name, justify="right", no_wrap=True)
    replicas = next((lv.replicas for lv in result.levels if lv.replicas), None)
    if replicas:
        table.add_column("replica shares", justify="right", no_wrap=True)
    for lv in result.levels:
        rate = f" @{lv.request_rate:g}/s" if lv.request_rate else ""
        shares = [" / ".join(f"{r['share']:.0%}" for r in lv.replicas or [])] if replicas else []
        table.add_row(f"{lv.concurrency}{rate}", str(lv.completed), str(lv.failed), f"{lv.request_throughput:.1f}",
                      f"{lv.sample_throughput:.1f}", f"{lv.total_token_throughput:.0f}", _ms(lv.mean_e2el_ms),
                      _ms(lv.median_e2el_ms), _ms(lv.p90_e2el_ms), _ms(lv.p99_e2el_ms), f"{lv.client_cpu:.0%}",
                      *shares, style="red" if lv.failed else None)
    console.print(table)
    if replicas:
        console.print("[dim]replica shares (samples scored), in order: "
                      + ", ".join(escape(r["url"]) for r in replicas) + "[/]", highlight=False, soft_wrap=True)
    env = result.environment
    threads = env.get("scorer_torch_threads")
    console.print(f"[dim]{result.mode}; event loop {env['event_loop']}; {env['cpu_cores']} CPU cores"
                  + (f"; scorer torch threads {threads}" if threads else "") + "; tokens = whitespace words[/]",
                  highlight=False)
    for lv in result.levels:
        if lv.errors:
            kinds = ", ".join(f"{k}: {v}" for k, v in lv.errors.items())
            console.print(f"[red]concurrency {lv.concurrency} errors[/]: {escape(kinds)}", highlight=False)
    examples = {k: v for lv in result.levels for k, v in lv.error_examples.items()}
    for kind, message in examples.items():
        console.print(f"  [red]{kind}[/], e.g.: {escape(message)}", highlight=False, soft_wrap=True)
    for warning in result.warnings:
        console.print(f"[yellow]Warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)


def table_console() -> Console:
    """stdout for the table; piped into a file or a CI log, wide enough that no column is squeezed."""
    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 140))
