"""train-ppo with --packing-samples and --use-dynamic-batch end to end: real Ray and DeepSpeed, two data-parallel actor
workers (they agree on the number of micro-batches of each update), and the reward still rises."""

from __future__ import annotations

import pytest

from tests.helpers.train_ppo import assert_reward_rises, base_args, train


pytestmark = pytest.mark.slow


def test_packed_token_budget_training_learns(tiny_policy_dir, prompt_file, reward_file, tmp_path, ray_address):
    out = tmp_path / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, str(reward_file), ray_address)
    args += ["--max-samples", "6", "--num-episodes", "7", "--advantage-estimator", "group_norm",
             "--actor-learning-rate", "5e-3", "--lr-warmup-ratio", "0", "--generate-max-len", "16", "--seed", "7",
             "--zero-stage", "2", "--actor-num-gpus-per-node", "2",
             "--packing-samples", "--use-dynamic-batch", "--train-max-tokens-per-gpu", "48",
             "--rollout-max-tokens-per-gpu", "64", "--init-kl-coef", "0"]
    result = train(args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_reward_rises(out, 21)
