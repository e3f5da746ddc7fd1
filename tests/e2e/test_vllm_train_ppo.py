"""train-ppo with vLLM rollouts, end to end: the real CLI in a subprocess on the arithmetic example (its trained
policy and reward_func.py), one vLLM engine of tensor-parallel size 2 (two worker processes, each with half of the
sharded weights), IS correction on. Held-out accuracy rises as with HF generate, the engine's log-probs agree with
the actor's every step in fp32 (so every weight sync reached both workers), time/weight_sync is logged, and the
engine's final greedy answers (the last evaluation, after the last sync) are the trained policy's HF ones. With
--profile each step also says where its time went: every role's compute per phase, within the phase's time.
(--vllm-tensor-parallel-size 1 engines run train-ppo in test_lora_train_ppo.py and test_async_train_e2e.py.)"""

from __future__ import annotations

import json
import sys

import pytest

from tests.helpers import ARITHMETIC, ROOT, run_rlhfctl


pytestmark = pytest.mark.slow

ARITH = ARITHMETIC


def test_ppo_with_vllm_rollouts_learns_and_keeps_the_engine_in_sync(tmp_path, ray_address):
    out = tmp_path / "out"
    args = ["--config", str(ARITH / "train_reward_func_file.yaml"), "--vllm-num-engines", "1", "--enforce-eager",
            "--vllm-tensor-parallel-size", "2",
            "--vllm-gpu-memory-utilization", "0.01", "--max-samples", "384", "--num-episodes", "1",
            "--eval-steps", "-1", "--eval-max-samples", "100", "--actor-learning-rate", "2e-4",
            "--enable-vllm-is-correction", "--profile", "--save-path", str(out), "--ckpt-path", str(out / "ckpt"),
            "--ray-address", ray_address, "--role-workers", "driver"]
    result = run_rlhfctl("train-ppo", *args, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vLLM: 1 engine(s) x tensor-parallel 2 = 2 worker processes" in result.stderr
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in steps if m["step"] > 0]
    assert [m["step"] for m in train] == list(range(1, 13))
    before, after = steps[0]["eval/exact_match"], train[-1]["eval/exact_match"]
    assert after >= before + 0.15, (before, after)  # the shipped policy starts at ~0.43 (HF runs reach ~0.8)
    for m in train:
        assert m["rollout/logprob_diff_max"] < 1e-3, m  # the engine samples with the actor's current weights
        assert m["time/weight_sync"] > 0 and "actor_vllm_kl" in m  # IS correction read the engine's log-probs
        # --profile: each role's compute in the step, never more than the phase it ran in took in the driver
        assert 0 < m["profile/vllm/generate_samples"] <= m["time/generate"], m
        assert 0 < m["profile/vllm/tokenize"] < m["profile/vllm/generate_samples"], m
        assert 0 < m["profile/actor/log_probs"] <= m["time/make_experience"] + m["time/reward"], m
        assert 0 < m["profile/actor/train"] <= m["time/train"], m
        assert 0 < m["profile/vllm/receive_weights"] <= m["time/weight_sync"], m
        assert all(m[f"profile/overhead/{p}"] >= 0 for p in ("generate", "experience", "train", "weight_sync")), m

    sys.path.insert(0, str(ARITH))
    from evaluate import accuracy  # the HF greedy answers of the saved (trained) policy

    hf = accuracy(out, ARITH / "test.jsonl", 100)
    assert abs(hf - after) <= 0.01, (hf, after)  # one near-tied answer of 100 may differ
