"""Resumable checkpoints: `--ckpt-path/global_step{N}/` holds each trained role's engine state (model, optimizer,
scheduler) and `trainer_state.json` (step, data position, KL coefficient). Sampling and shuffling are reseeded from
--seed and the step number, so a resumed run draws what the uninterrupted run would have drawn at the same step.

A save is atomic, so a kill at any moment leaves the newest complete checkpoint loadable:
- the roles write into a hidden `.tmp-global_step{N}-*` folder; `trainer_state.json`, written last, marks it
  complete; only then is it renamed into place;
- a folder it replaces (the same step saved again, e.g. a resumed run whose reward fails at once) is first renamed
  aside to `.replaced-*` and deleted only after the new one is in place;
- pruning beyond --max-ckpt-num renames a folder to `.pruned-*` before deleting it, so a half-deleted checkpoint
  never looks complete.
Leftovers of a killed save are settled when the next run opens the folder: a complete `.tmp-` folder whose step has
no checkpoint is put in place, a `.replaced-` folder whose step has none is put back, everything else is deleted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^global_step(\d+)$")
_HIDDEN = re.compile(r"^\.(tmp|replaced|pruned)-(global_step\d+)-[0-9a-f]+$")


@dataclass
class TrainerState:
    """Where the driver loop stands after `step` completed steps."""

    step: int = 0
    episode: int = 0
    batch_in_episode: int = 0  # next rollout batch of `episode`
    kl_coef: float = 0.0
    samples_seen: int = 0
    nonfinite_skipped: int = 0  # batches skipped for a NaN/inf (--skip-nonfinite-batches), over the whole run

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @staticmethod
    def from_file(path: Path) -> "TrainerState":
        return TrainerState(**json.loads(path.read_text()))


def _is_complete(folder: Path) -> bool:
    return (folder / STATE_FILE).is_file()


class CheckpointManager:
    """Names, lists, prunes and finds checkpoints under --ckpt-path; the roles write their own parts into them."""

    def __init__(self, ckpt_path: str, max_ckpt_num: int) -> None:
        self.root = Path(ckpt_path)
        self.max_ckpt_num = max_ckpt_num
        self.recover()

    def folder(self, step: int) -> Path:
        return self.root / f"global_step{step}"

    def complete(self) -> list[tuple[int, Path]]:
        """Finished checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for child in self.root.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and _is_complete(child):
                found.append((int(match.group(1)), child))
        return sorted(found)

    def latest(self) -> Optional[Path]:
        done = self.complete()
        return done[-1][1] if done else None

    def begin(self, step: int) -> Path:
        """A fresh hidden folder for the roles to write `step` into; the checkpoint in place is not touched."""
        folder = self.root / f".tmp-{self.folder(step).name}-{uuid.uuid4().hex[:12]}"
        folder.mkdir(parents=True)
        return folder

    def finish(self, tmp: Path, state: TrainerState) -> Path:
        """Mark `tmp` complete, rename it into place, then delete what it replaced and the checkpoints beyond
        --max-ckpt-num. Returns the checkpoint's folder."""
        part = tmp / (STATE_FILE + ".part")
        with part.open("w") as f:
            f.write(state.to_json())
            f.flush()
            os.fsync(f.fileno())
        part.rename(tmp / STATE_FILE)
        final = self.folder(state.step)
        replaced = None
        if final.exists():
            replaced = self._aside(final, "replaced")
        tmp.rename(final)
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
        done = self.complete()
        for _, old in done[: max(0, len(done) - self.max_ckpt_num)]:
            shutil.rmtree(self._aside(old, "pruned"), ignore_errors=True)
        return final

    def _aside(self, folder: Path, why: str) -> Path:
        target = folder.with_name(f".{why}-{folder.name}-{uuid.uuid4().hex[:12]}")
        folder.rename(target)
        return target

    def recover(self) -> list[str]:
        """Settle what a killed save left behind (see the module docstring); returns what was done, for tests."""
        if not self.root.is_dir():
            return []
        done = []
        order = {"tmp": 0, "replaced": 1, "pruned": 2}  # the newest copy of a step first
        hidden = [(m.groups(), child) for child in self.root.iterdir() if (m := _HIDDEN.match(child.name))]
        for (kind, name), child in sorted(hidden, key=lambda item: (order[item[0][0]], item[1].name)):
            final = self.root / name
            if kind in ("tmp", "replaced") and _is_complete(child) and not _is_complete(final):
                if final.exists():  # an unfinished folder of an older rlhfctl, which saved in place
                    shutil.rmtree(final)
                child.rename(final)
                done.append(f"restored {name} from {child.name}")
            else:
                shutil.rmtree(child, ignore_errors=True)
                done.append(f"deleted {child.name}")
        return done
