"""The report for people (rich tables: checks, reward statistics, a histogram, the samples worth a look) and for
machines (`--json`, one object). Texts from the user's data are printed as plain text, never as markup.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rlhfctl.checks.report import Report
from rlhfctl.checks.scoring import Progress

ICONS = {"pass": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "red"), "skip": ("-", "dim")}
BAR = 30  # histogram bar width in characters
CLIP = 70  # characters of a query or response shown


@contextmanager
def progress_bar() -> Iterator[Progress]:
    """A transient progress bar on stderr (only on a terminal) for runs over large datasets."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    tasks: dict[str, Any] = {}
    with Bar(TextColumn("scoring {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
             console=console, transient=True, disable=not console.is_terminal) as bar:

        def update(run: str, done: int, total: int) -> None:
            if run not in tasks:
                tasks[run] = bar.add_task("the dataset" if run == "main" else "with shuffled labels", total=total)
            bar.update(tasks[run], completed=done)

        yield update


def print_json(report: Report, console: Console | None = None) -> None:
    text = json.dumps(_finite(report.to_json()), indent=2, ensure_ascii=False, allow_nan=False, default=_jsonable)
    if console is None:
        import sys

        sys.stdout.write(text + "\n")
    else:
        console.print(text, markup=False, highlight=False, soft_wrap=True)


def print_report(report: Report, console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    samples = report.stats.get("samples")
    header = Text.assemble(("check-reward ", "bold"), (report.reward, "bold cyan"),
                           f"  (responses: {report.responses}" + (f", {samples} samples)" if samples else ")"))
    console.print(header)
    console.print(_checks_table(report))
    _print_details(report, console)
    if report.stats.get("scored"):
        _print_stats(report, console)
        _print_histogram(report, console)
        _print_worst(report, console)
    counts = report.counts()
    verdict = Text.assemble(
        ("\nResult: ", "bold"),
        f"{counts['pass']} passed, {counts['warn']} warned, {counts['fail']} failed, {counts['skip']} skipped → ",
        ("OK" if report.ok else "FAILED", "bold green" if report.ok else "bold red"),
        f" (exit {report.exit_code})",
    )
    console.print(verdict)


def _checks_table(report: Report) -> Table:
    table = Table(title=None, show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("", width=1)
    table.add_column("check", style="bold", no_wrap=True)
    table.add_column("result", overflow="fold")
    for check in report.ordered():
        icon, style = ICONS[check.status]
        table.add_row(Text(icon, style=style), check.name, Text(check.message, style=style if
                                                                  check.status != "pass" else ""))
    return table


def _print_details(report: Report, console: Console) -> None:
    """Under the table: the first failing sample of each check in full (input, the user's traceback), the
    others one line each. Printed without hard wrapping, so tracebacks stay copyable."""
    for check in report.ordered():
        if check.status not in ("fail", "warn") or not check.details:
            continue
        console.print(Text(f"\n{check.name}", style="bold"))
        for n, detail in enumerate(check.details):
            out = Text()
            if "sample" in detail:
                run = " with another row's label" if detail.get("run") == "control" else ""
                out.append(f"  sample {detail['sample']} (row {detail['row']}{run}), label {_clip(detail['label'])}")
                if n:
                    out.append(f": {detail.get('message', '')}")
                else:
                    out.append(f"\n    query: {_clip(detail['query'])}")
            if n == 0 and detail.get("traceback"):
                out.append("\n    " + detail["traceback"].replace("\n", "\n    "), style="dim")
            if out.plain:
                console.print(out, soft_wrap=True)


def _print_stats(report: Report, console: Console) -> None:
    s = report.stats
    console.print(Text(f"\nRewards ({s['scored']} of {s['samples']} samples scored)", style="bold"))
    console.print(f"  mean {s['mean']:.4g}   std {s['std']:.4g}   min {s['min']:.4g}   median {s['median']:.4g}   "
                  f"max {s['max']:.4g}", markup=False)
    if "separation" in s:
        sep = s["separation"]
        console.print(f"  right labels {sep['matched_mean']:.4g}   shuffled labels {sep['mismatched_mean']:.4g}   "
                      f"difference {sep['difference']:+.4g}", markup=False)
    if s.get("extra_logs_mean"):
        logs = "   ".join(f"{k} {v:.4g}" for k, v in s["extra_logs_mean"].items())
        console.print(f"  extra_logs means: {logs}", markup=False)


def _print_histogram(report: Report, console: Console) -> None:
    edges, counts = report.histogram.get("edges"), report.histogram.get("counts")
    if not counts:
        return
    top = max(counts)
    console.print(Text("\nHistogram", style="bold"))
    for i, count in enumerate(counts):
        lo, hi = edges[i], edges[i + 1]
        bar = "█" * (round(BAR * count / top) if top else 0)
        label = f"{lo:>8.3g}" if lo == hi else f"{lo:>8.3g} – {hi:<8.3g}"
        console.print(Text.assemble(f"  {label} │", (bar, "cyan"), f" {count}"))


def _print_worst(report: Report, console: Console) -> None:
    if not report.worst:
        return
    title = "Highest rewards for wrong answers" if report.responses == "shuffled" else "Lowest rewards"
    table = Table(title=title, title_justify="left", title_style="bold", box=None, pad_edge=False)
    for name in ("sample", "row", "reward", "label", "response"):
        table.add_column(name, overflow="fold", justify="right" if name in ("sample", "row", "reward") else "left")
    for row in report.worst:
        table.add_row(str(row["sample"]), str(row["row"]), f"{row['reward']:.4g}", Text(_clip(row["label"], 20)),
                      Text(_clip(row["response"])))
    console.print()
    console.print(table)


def _clip(text: str, limit: int = CLIP) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _finite(value: Any) -> Any:
    """NaN (an extra_logs value that was not logged) becomes null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return str(value)
