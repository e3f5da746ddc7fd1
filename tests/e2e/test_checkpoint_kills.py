"""A kill -9 at any point of a checkpoint save leaves a checkpoint that resumes, and a resumed run that fails never
writes over the only good one. The real CLI in a subprocess, real Ray and DeepSpeed, tiny models."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import ENV, rlhfctl
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
    proc = subprocess.Popen(rlhfctl("train-ppo", *args), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
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


def test_kill_9_at_any_point_of_a_save_leaves_a_checkpoint_that_resumes(tiny_policy_dir, prompt_file, reward_file,
                                                                        tmp_path, ray_address):
    """DeepSpeed ZeRO-2, a save every step, one checkpoint kept (so every save also deletes one): killed while the
    workers write, right after a new checkpoint is renamed into place (pruning under way), and while a resumed run
    saves; each time the newest complete checkpoint is whole and --load-checkpoint resumes from it."""
    out = tmp_path / "out"
    ckpt = out / "ckpt"
    args = base_args(tiny_policy_dir, prompt_file, out, str(reward_file), ray_address) + [
        "--advantage-estimator", "group_norm", "--init-kl-coef", "0", "--save-steps", "1", "--max-ckpt-num", "1",
        "--num-episodes", "100"]
    # 1. while the workers write step 2's checkpoint (step 1's is the one to keep)
    assert _kill_when(args, lambda: bool(_complete_steps(ckpt)) and _save_under_way(ckpt))
    kept = _complete_steps(ckpt)
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


def test_a_resumed_run_whose_reward_fails_keeps_the_good_checkpoint(tiny_policy_dir, prompt_file, reward_file,
                                                                    tmp_path, ray_address):
    """Step 1 is saved; a resumed run's reward fails at step 2, so it saves step 1 again, over the only good
    checkpoint. It is killed during that save: step 1's checkpoint is still there, whole, and resumes."""
    out = tmp_path / "out"
    ckpt = out / "ckpt"
    args = base_args(tiny_policy_dir, prompt_file, out, str(reward_file), ray_address) + [
        "--advantage-estimator", "group_norm", "--init-kl-coef", "0", "--max-samples", "2", "--save-steps", "1"]
    first = train(args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _complete_steps(ckpt) == [1]
    bad = tmp_path / "raises.py"
    bad.write_text(REWARD_THAT_RAISES)
    resumed = [a if a != str(reward_file) else str(bad) for a in args] + ["--load-checkpoint", "--num-episodes", "2"]
    saving = lambda: _save_under_way(ckpt) or not (ckpt / "global_step1" / "trainer_state.json").is_file()  # noqa: E731
    assert _kill_when(resumed, saving)
    assert _complete_steps(ckpt) == [1]
    # Not killed, the same run stops with the reward's message and still leaves step 1 whole.
    result = train(resumed)
    assert result.returncode == 1 and "the grader is down" in result.stderr
    assert "Checkpoint of step 1 saved in" in " ".join(result.stderr.split())
    assert _complete_steps(ckpt) == [1] and [p.name for p in ckpt.iterdir()] == ["global_step1"]
    again = train(args[:-2] + ["--save-steps", "1", "--load-checkpoint", "--num-episodes", "2"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert [m["step"] for m in metrics(out)] == [1, 2]
