"""A kill -9 at any point of a checkpoint save leaves a checkpoint that resumes, and a resumed run that fails never
writes over the only good one. The real CLI in a process of its own, real DeepSpeed, tiny models; the roles in the
run's own process, as on a machine without GPUs (so the kill takes the writing workers with it).

Both tests start from one run (`killed_run`), killed while its workers write a checkpoint: the first test goes on
from that run's own folder, leftovers of the killed save included; the second from a copy of its complete
checkpoint. A train-ppo run costs ~10 s of process starts before its first step, so sharing the first one matters."""

from __future__ import annotations

import os
import signal
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.forked import ForkedRun
from tests.helpers.train_ppo import base_args, metrics, train


pytestmark = pytest.mark.slow

REWARD_THAT_RAISES = '''
def reward_func(queries, prompts, labels, **kwargs):
    raise RuntimeError("the grader is down")
'''


# ------------------------------------------------------------------------------------------------ kill -9
def _save_under_way(ckpt: Path) -> bool:
    return ckpt.is_dir() and any(p.name.startswith(".tmp-") for p in ckpt.iterdir())


def _complete_steps(ckpt: Path) -> list[int]:
    return sorted(int(p.parent.name[len("global_step"):]) for p in ckpt.glob("global_step*/trainer_state.json"))


def _kill_when(args: list[str], condition, timeout: float = 180) -> bool:
    """Start train-ppo, SIGKILL it the moment `condition()` holds; True if it did (False: it ended first)."""
    proc = ForkedRun(["train-ppo", *args])
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            if condition():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return True
            time.sleep(0.002)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def _args(policy: Path, prompts: Path, reward: Path, out: Path) -> list[str]:
    """DeepSpeed ZeRO-2 (the default engine), 2 steps per episode, a save every step, one checkpoint kept (so every
    save also deletes one). No critic or reference worker: their saves go the same way as the actor's."""
    return base_args(policy, prompts, out, str(reward), None) + [
        "--advantage-estimator", "group_norm", "--init-kl-coef", "0", "--save-steps", "1", "--max-ckpt-num", "1",
        "--num-episodes", "100"]


@dataclass
class KilledRun:
    """The shared first run, killed -9 while its workers wrote the checkpoint after step `kept`'s (`killed`: it was
    killed, not ended first)."""

    out: Path  # the run's --save-path (its --ckpt-path is out/ckpt), leftovers of the killed save included
    killed: bool
    kept: list[int]  # the complete checkpoints it left
    saved_copy: Path  # a --save-path holding only its complete checkpoint and metrics.jsonl, taken at once


@pytest.fixture(scope="module")
def killed_run(tiny_policy_dir, prompt_file, reward_file, tmp_path_factory) -> KilledRun:
    """One run killed while the workers write step 2's checkpoint (step 1's is the one to keep; a later step's if
    the kill missed step 2's save). `out` is the first test's to go on from; the second copies `saved_copy`, taken
    before anything else touched `out`. The copy holds the complete checkpoint only: the killed run's workers may
    still be writing its hidden folder."""
    root = tmp_path_factory.mktemp("killed_run")
    out, copy = root / "out", root / "saved"
    ckpt = out / "ckpt"
    killed = _kill_when(_args(tiny_policy_dir, prompt_file, reward_file, out),
                        lambda: bool(_complete_steps(ckpt)) and _save_under_way(ckpt))
    kept = _complete_steps(ckpt) if killed else []
    copy.mkdir()
    for step in kept:
        shutil.copytree(ckpt / f"global_step{step}", copy / "ckpt" / f"global_step{step}")
    if (out / "metrics.jsonl").is_file():
        shutil.copy(out / "metrics.jsonl", copy / "metrics.jsonl")
    return KilledRun(out, killed, kept, copy)


def test_kill_9_at_any_point_of_a_save_leaves_a_checkpoint_that_resumes(killed_run, tiny_policy_dir, prompt_file,
                                                                        reward_file):
    """Killed while the workers write (`killed_run`), right after a new checkpoint is renamed into place (pruning
    under way), and while a resumed run saves; each time the newest complete checkpoint is whole and
    --load-checkpoint resumes from it."""
    out = killed_run.out
    ckpt = out / "ckpt"
    args = _args(tiny_policy_dir, prompt_file, reward_file, out)
    # 1. while the workers write step 2's checkpoint (step 1's is the one to keep)
    assert killed_run.killed
    kept = killed_run.kept
    assert kept and kept[-1] >= 1
    # 2. a resumed run killed the moment a newer checkpoint is in place (the old one is being pruned)
    assert _kill_when(args + ["--load-checkpoint"], lambda: (_complete_steps(ckpt) or [0])[-1] > kept[-1])
    kept = _complete_steps(ckpt)
    # 3. and again while its workers write
    before = kept[-1]
    assert _kill_when(args + ["--load-checkpoint"],
                      lambda: _save_under_way(ckpt) and any(p.name.startswith(".tmp-") and any(p.iterdir())
                                                            for p in ckpt.iterdir()))
    kept = _complete_steps(ckpt)
    assert kept[-1] >= before
    last = kept[-1]
    # A run resumes from the newest checkpoint and finishes; it leaves no temporary folder behind.
    final_args = args[:-2] + ["--num-episodes", str(last // 2 + 1), "--load-checkpoint"]
    result = train(final_args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from {ckpt / f'global_step{last}'} at step {last}" in " ".join(result.stderr.split())
    assert metrics(out)[-1]["step"] == 2 * (last // 2 + 1)
    assert [p.name for p in ckpt.iterdir()] == [f"global_step{2 * (last // 2 + 1)}"]


def test_a_resumed_run_whose_reward_fails_keeps_the_good_checkpoint(killed_run, tiny_policy_dir, prompt_file,
                                                                    reward_file, tmp_path):
    """Step 1 is saved (`killed_run`'s checkpoint); a resumed run's reward fails at step 2, so it saves step 1
    again, over the only good checkpoint. It is killed during that save: step 1's checkpoint is still there, whole,
    and resumes."""
    out = tmp_path / "out"
    ckpt = out / "ckpt"
    shutil.copytree(killed_run.saved_copy, out)
    assert killed_run.killed and len(killed_run.kept) == 1, killed_run
    good = killed_run.kept[0]  # step 1, or a later one if the shared run's kill missed step 2's save
    assert _complete_steps(ckpt) == [good]
    bad = tmp_path / "raises.py"
    bad.write_text(REWARD_THAT_RAISES)
    end = 2 * (good // 2 + 1)  # the end of the episode after step `good`: a step is left to fail, then to train
    resumed = _args(tiny_policy_dir, prompt_file, bad, out)[:-2] + [
        "--load-checkpoint", "--num-episodes", str(end // 2)]
    saving = lambda: (_save_under_way(ckpt)  # noqa: E731
                      or not (ckpt / f"global_step{good}" / "trainer_state.json").is_file())
    assert _kill_when(resumed, saving)
    assert _complete_steps(ckpt) == [good]
    # Not killed, the same run stops with the reward's message and still leaves step 1 whole.
    result = train(resumed)
    assert result.returncode == 1 and "the grader is down" in result.stderr
    assert f"Checkpoint of step {good} saved in" in " ".join(result.stderr.split())
    assert _complete_steps(ckpt) == [good] and [p.name for p in ckpt.iterdir()] == [f"global_step{good}"]
    again = train(_args(tiny_policy_dir, prompt_file, reward_file, out)[:-2] + [
        "--load-checkpoint", "--num-episodes", str(end // 2)])
    assert again.returncode == 0, again.stderr[-3000:]
    assert [m["step"] for m in metrics(out)] == list(range(1, end + 1))
