"""The demo's live view of train-ppo on a terminal: one bar (step/total, reward, held-out accuracy, ETA).

Given the terminal, train-ppo's own bar would share it with its Ray workers' and vLLM's log lines, and it does not
know that the demo's reward logs exact match. So the demo sends train-ppo's output to OUT/train-ppo.log (one line
per step there) and draws this bar from the metrics.jsonl that train-ppo appends to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Optional

STARTING = "starting Ray, the workers and the rollout engine"


@dataclass
class TrainView:
    """What the bar shows, folded from metrics.jsonl records as they arrive."""

    total: int
    step: int = 0
    reward: Optional[float] = None
    accuracy_before: Optional[float] = None  # eval/exact_match at step 0 (evaluated before any update)
    accuracy: Optional[float] = None  # the latest eval/exact_match
    accuracy_step: int = 0  # the step it was measured at
    eval_reward: Optional[float] = None  # the latest eval/reward: the held-out figure when no exact match is logged

    def update(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            step = int(record.get("step", 0))
            self.step = max(self.step, step)
            if record.get("reward") is not None:
                self.reward = record["reward"]
            if record.get("eval/exact_match") is not None:
                self.accuracy, self.accuracy_step = record["eval/exact_match"], step
                if step == 0:
                    self.accuracy_before = self.accuracy
            if record.get("eval/reward") is not None:
                self.eval_reward = record["eval/reward"]

    def line(self) -> str:
        """The text beside the bar."""
        parts = [] if self.reward is None else [f"reward {self.reward:.3f}"]
        if self.accuracy is not None:
            measured_again = self.accuracy_before is not None and self.accuracy_step > 0
            before = f"{self.accuracy_before:.1%} -> " if measured_again else ""
            parts.append(f"held-out exact match {before}{self.accuracy:.1%}")
        elif self.eval_reward is not None:
            parts.append(f"held-out reward {self.eval_reward:.3f}")
        return "  ".join(parts) or STARTING


class MetricsTail:
    """The records appended to a metrics.jsonl since the last read; a line still being written waits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


class TrainBar:
    """`with TrainBar(metrics_file, total) as bar:` then `bar.refresh()` while train-ppo runs."""

    def __init__(self, metrics_file: Path, total: int, console: Any = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.view = TrainView(total)
        self._tail = MetricsTail(metrics_file)
        self._progress = Progress(
            TextColumn("[bold]train-ppo"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[live]}"), console=console,
        )
        self._task = self._progress.add_task("train-ppo", total=total, live=self.view.line())

    def refresh(self) -> None:
        self.view.update(self._tail.read())
        self._progress.update(self._task, completed=self.view.step, live=self.view.line())

    def __enter__(self) -> "TrainBar":
        self._progress.start()
        return self

    def __exit__(self, kind: Optional[type], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.refresh()
        self._progress.stop()
