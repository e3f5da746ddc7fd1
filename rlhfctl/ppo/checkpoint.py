"""Resumable checkpoints: `--ckpt-path/global_step{N}/` holds each trained role's engine state (model, optimizer,
scheduler) and `trainer_state.json` (step, data position, KL coefficient), written last so a folder without it
is an interrupted save and is ignored. Sampling and shuffling are reseeded from --seed and the step number, so a
resumed run draws what the uninterrupted run would have drawn at the same step.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^global_step(\d+)$")


@dataclass
class TrainerState:
    """Where the driver loop stands after `step` completed steps."""

    step: int = 0
    episode: int = 0
    batch_in_episode: int = 0  # next rollout batch of `episode`
    kl_coef: float = 0.0
    samples_seen: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @staticmethod
    def from_file(path: Path) -> "TrainerState":
        return TrainerState(**json.loads(path.read_text()))


class CheckpointManager:
    """Names, lists, prunes and finds checkpoints under --ckpt-path; the roles write their own parts into them."""

    def __init__(self, ckpt_path: str, max_ckpt_num: int) -> None:
        self.root = Path(ckpt_path)
        self.max_ckpt_num = max_ckpt_num

    def folder(self, step: int) -> Path:
        return self.root / f"global_step{step}"

    def complete(self) -> list[tuple[int, Path]]:
        """Finished checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for child in self.root.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / STATE_FILE).is_file():
                found.append((int(match.group(1)), child))
        return sorted(found)

    def latest(self) -> Optional[Path]:
        done = self.complete()
        return done[-1][1] if done else None

    def begin(self, step: int) -> Path:
        """A fresh folder for `step` (an unfinished earlier attempt at the same step is replaced)."""
        folder = self.folder(step)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def finish(self, folder: Path, state: TrainerState) -> None:
        """Mark `folder` complete, then delete the oldest checkpoints beyond --max-ckpt-num."""
        tmp = folder / (STATE_FILE + ".tmp")
        tmp.write_text(state.to_json())
        tmp.rename(folder / STATE_FILE)
        done = self.complete()
        for _, old in done[: max(0, len(done) - self.max_ckpt_num)]:
            shutil.rmtree(old, ignore_errors=True)
