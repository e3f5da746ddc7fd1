"""Where a run's metrics go: a live rich progress bar, metrics.jsonl in --save-path, TensorBoard and W&B.

The trainer hands one flat dict of floats per step to `Tracker.log`; every sink gets the same numbers, so the
JSON lines a test reads are what a user sees in TensorBoard.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional

# What the progress bar shows, in order: (metric key, label, format).
_LIVE = (
    ("reward", "reward", "{:.3f}"),
    ("eval/reward", "eval", "{:.3f}"),
    ("kl", "kl", "{:.4f}"),
    ("policy_loss", "pg", "{:.3f}"),
    ("value_loss", "vf", "{:.3f}"),
    ("samples_per_s", "samples/s", "{:.1f}"),
    ("time/generate", "gen", "{:.2f}s"),
    ("time/reward", "rm", "{:.2f}s"),
    ("time/make_experience", "exp", "{:.2f}s"),
    ("time/train", "train", "{:.2f}s"),
)


def summary_line(metrics: dict[str, float]) -> str:
    """The short text of the live metrics (also the per-step log line where stderr is not a terminal)."""
    parts = []
    for key, label, fmt in _LIVE:
        value = metrics.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            parts.append(f"{label} {fmt.format(value)}")
    return "  ".join(parts)


class Tracker:
    """One per run, in the driver. `log(step, metrics)` after each step, `close()` at the end."""

    def __init__(self, save_path: str, total_steps: int, *, resume_step: Optional[int] = None,
                 use_tensorboard: Optional[str] = None, use_wandb: Optional[str] = None,
                 run_config: Optional[dict[str, Any]] = None) -> None:
        """`resume_step`: the step of the checkpoint a resumed run starts from (None: a new run)."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        Path(save_path).mkdir(parents=True, exist_ok=True)
        self.console = Console(stderr=True)
        self.metrics_file = Path(save_path) / "metrics.jsonl"
        if self.metrics_file.is_file() and self.metrics_file.stat().st_size:
            if resume_step is None:  # a new run: never mix its steps into an earlier run's file
                kept = _free_name(self.metrics_file)
                self.metrics_file.rename(kept)
                self.note(f"{self.metrics_file} held an earlier run's metrics: moved to {kept.name}")
            else:  # steps logged after the checkpoint are about to be run again
                _drop_steps_after(self.metrics_file, resume_step)
        self._jsonl = self.metrics_file.open("a", encoding="utf-8")
        start_step = resume_step or 0
        self._live = self.console.is_terminal
        self._progress = Progress(
            TextColumn("[bold]PPO"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[live]}"), console=self.console, transient=False, disable=not self._live,
        )
        self._task = self._progress.add_task("train", total=total_steps, completed=start_step, live="")
        self._progress.start()
        self.total_steps = total_steps
        self._tb = _open_tensorboard(use_tensorboard)
        self._wandb = _open_wandb(use_wandb, save_path, run_config or {})

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        line = summary_line(metrics)
        if self._live:
            self._progress.update(self._task, completed=step, live=line)
        else:
            self.console.print(f"step {step}/{self.total_steps}  {line}", highlight=False, soft_wrap=True)
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log({**metrics, "step": step}, step=step)

    def note(self, text: str) -> None:
        """A message that must not be torn by the live bar (warnings, checkpoint saves)."""
        self.console.print(text, highlight=False, soft_wrap=True)

    def close(self) -> None:
        self._progress.stop()
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _drop_steps_after(path: Path, step: int) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(kept), encoding="utf-8")


def _free_name(path: Path) -> Path:
    """metrics.1.jsonl, metrics.2.jsonl, ...: the first that does not exist."""
    n = 1
    while (candidate := path.with_name(f"{path.stem}.{n}{path.suffix}")).exists():
        n += 1
    return candidate


def _plain(value: Any) -> Any:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def _open_tensorboard(log_dir: Optional[str]) -> Any:
    if not log_dir:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        from rlhfctl.errors import UsageError

        raise UsageError(f"--use-tensorboard needs the tensorboard package (pip install tensorboard): {exc}") from None
    return SummaryWriter(log_dir=log_dir)


def _open_wandb(use_wandb: Optional[str], save_path: str, run_config: dict[str, Any]) -> Any:
    """`--use-wandb offline` (or WANDB_MODE=offline) logs to files under --save-path; anything else is an API key."""
    if not use_wandb:
        return None
    try:
        import wandb
    except ImportError:
        from rlhfctl.errors import UsageError

        raise UsageError("--use-wandb needs the wandb package (pip install wandb)") from None
    offline = use_wandb.lower() == "offline" or os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled")
    if not offline:
        wandb.login(key=use_wandb, relogin=True)
    return wandb.init(project=os.environ.get("WANDB_PROJECT", "rlhfctl"), dir=save_path, config=run_config,
                      mode="offline" if offline else "online", reinit="finish_previous")
