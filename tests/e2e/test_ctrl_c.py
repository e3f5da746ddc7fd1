"""Ctrl-C at every moment of a train-ppo step: the run saves a checkpoint, exits 130, and --load-checkpoint resumes
at the saved step.

One chain of real runs, each a process of its own (forked: tests/helpers/forked.py): each run is interrupted at one moment (a SIGINT sent by this test once the run is
observably there), and the next run resumes from its checkpoint. The first run's actor is a Ray worker of the
session's cluster, interrupted while its update is under way in that worker; the others run the actor in their own
process, as a run on a machine without GPUs does, and the first of them resumes from the Ray run's checkpoint. The run holds at the moment until the
signal arrives, so the test does not depend on how fast the machine is: a hook of the trainer (RLHFCTL_PHASE_FILE,
RLHFCTL_PHASE_HOLD; rlhfctl/ppo/moments.py) for generation, training, the weight sync and saving, and the
reward_func itself for scoring and evaluation. The first run is started with SIGINT ignored, as a script's
background job is.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.helpers import ENV
from tests.helpers.forked import ForkedRun
from tests.helpers.train_ppo import base_args, metrics, train

pytestmark = pytest.mark.slow

# Scores like the e2e reward; on the first call of the kind named by CTRL_C_HOLD_REWARD ("train" or "eval", told
# apart by the eval set's label) it says so with a file and waits for the test to release it.
REWARD_THAT_WAITS = '''
import os
import time
from pathlib import Path


def reward_func(queries, prompts, labels, **kwargs):
    kind = "eval" if labels[0] == "eval" else "train"
    if os.environ.get("CTRL_C_HOLD_REWARD") == kind:
        marks = Path(os.environ["CTRL_C_MARKS"])
        (marks / "scoring").touch()
        while not (marks / "release").exists():
            time.sleep(0.01)
    responses = [q[len(p):] for q, p in zip(queries, prompts)]
    return [r.count("e") / max(1, len(r)) for r in responses]
'''

WAIT_S = 240  # only a guard against a hang: every wait below ends on an event of the run


def _wait_for(proc: ForkedRun, event: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not event():
        assert proc.poll() is None, f"the run exited ({proc.returncode}) before {what}: {proc.output()[1][-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {WAIT_S}s"
        time.sleep(0.05)


def _interrupt(args: list[str], marks: Path, hold: dict[str, str], reached: Callable[[], bool], what: str,
               background: bool) -> str:
    """Run train-ppo, send SIGINT once `reached()`, release a waiting reward_func; returns its stderr (exit 130).

    `background`: start it as a script's `... &` does, with SIGINT ignored (the CI failure: the run trained to the
    end and exited 0)."""
    env = {**ENV, **hold, "RLHFCTL_PHASE_FILE": str(marks / "phases"), "CTRL_C_MARKS": str(marks)}
    (marks / "release").unlink(missing_ok=True)
    (marks / "scoring").unlink(missing_ok=True)
    proc = ForkedRun(["train-ppo", *args], env=env, sigint_ignored=background)
    try:
        _wait_for(proc, reached, what)
        proc.send_signal(signal.SIGINT)
        (marks / "release").touch()
        _, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, f"{what}: exit {proc.returncode}\n{err[-3000:]}"
    return err


def _saved_step(err: str) -> int:
    found = re.search(r"interrupted after step (\d+); checkpoint saved in (\S+)global_step(\d+) \(resume with "
                      r"--load-checkpoint\)", " ".join(err.split()))
    assert found, err[-3000:]
    assert found.group(1) == found.group(3)
    return int(found.group(1))


def test_ctrl_c_at_each_moment_saves_a_checkpoint_that_resumes(tiny_policy_dir, prompt_file, tmp_path,
                                                               ray_address):
    from rlhfctl.ppo.checkpoint import CheckpointManager

    reward, eval_file, out, marks = tmp_path / "reward.py", tmp_path / "eval.jsonl", tmp_path / "out", tmp_path / "m"
    reward.write_text(REWARD_THAT_WAITS)
    eval_file.write_text("".join(json.dumps({"input": q, "answer": "eval"}) + "\n" for q in ("2 + 2?", "3 + 1?")))
    marks.mkdir()
    # 4 prompts, 2 per step: 8 steps; a resumable checkpoint every 2 steps; an evaluation after every step
    args = base_args(tiny_policy_dir, prompt_file, out, str(reward), None) + [
        "--advantage-estimator", "group_norm", "--engine", "torch", "--num-episodes", "4", "--init-kl-coef", "0",
        "--save-steps", "2", "--eval-dataset", str(eval_file), "--eval-steps", "1", "--eval-temperature", "0"]

    def at(moment: str) -> tuple[dict[str, str], Callable[[], bool], str]:
        phases = marks / "phases"
        return ({"RLHFCTL_PHASE_HOLD": moment},
                lambda: phases.is_file() and moment in phases.read_text().splitlines(), f"step {moment}")

    def scoring(kind: str) -> tuple[dict[str, str], Callable[[], bool], str]:
        return {"CTRL_C_HOLD_REWARD": kind}, (marks / "scoring").is_file, f"a {kind} reward call"

    # (where the run is interrupted, the step its checkpoint must hold)
    chain = [(at("2 train"), 2),  # the update is under way: Ctrl-C lets it finish, the step counts
             (at("4 generate"), 3),
             (scoring("train"), 3),  # the reward of step 4, while the models run their forwards
             (at("4 sync"), 4),  # the update is applied, the rollout engines not yet updated
             (scoring("eval"), 5),  # the evaluation after step 5
             (at("6 save"), 6)]  # the roles are writing step 6's checkpoint
    resumed_at = None
    for (hold, reached, what), expected in chain:
        on_ray = ["--ray-address", ray_address, "--role-workers", "ray"] if resumed_at is None else []
        err = _interrupt(args + on_ray + (["--load-checkpoint"] if resumed_at is not None else []), marks, hold,
                         reached, what, background=resumed_at is None)
        assert ("placement: actor 0 on " if on_ray else "placement: actor in the driver's process") in err
        if resumed_at is not None:
            assert f"global_step{resumed_at} at step {resumed_at}" in " ".join(err.split()), err[-3000:]
        assert _saved_step(err) == expected, f"{what}: {err[-3000:]}"
        latest = CheckpointManager(str(out / "ckpt"), 3).latest()
        assert latest is not None and latest.name == f"global_step{expected}", what
        assert json.loads((latest / "trainer_state.json").read_text())["step"] == expected
        resumed_at = expected

    last = train(args + ["--load-checkpoint"], timeout=WAIT_S)
    assert last.returncode == 0, last.stderr[-3000:]
    assert f"global_step{resumed_at} at step {resumed_at}" in " ".join(last.stderr.split())
    steps = [m["step"] for m in metrics(out)]
    assert steps[-2:] == [7, 8] and steps == sorted(set(steps)), steps
