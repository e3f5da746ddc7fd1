"""train-ppo with an LLM judge as its reward (--judge-model, scored in the driver): the real CLI, real Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "PYTHONWARNINGS": "ignore::FutureWarning"}


def test_train_ppo_trains_against_a_local_judge(tiny_policy_dir, prompt_file, tmp_path):
    out = tmp_path / "out"
    args = ["--pretrain", str(tiny_policy_dir), "--prompt-data", str(prompt_file), "--input-key", "input",
            "--label-key", "answer", "--judge-model", str(tiny_policy_dir), "--judge-mode", "generate",
            "--judge-max-new-tokens", "2", "--judge-fallback-reward", "-1", "--save-path", str(out),
            "--ckpt-path", str(out / "ckpt"), "--rollout-batch-size", "2", "--n-samples-per-prompt", "4",
            "--micro-rollout-batch-size", "2", "--train-batch-size", "8", "--micro-train-batch-size", "4",
            "--generate-max-len", "8", "--prompt-max-len", "64", "--max-samples", "2", "--engine", "torch",
            "--advantage-estimator", "group_norm", "--init-kl-coef", "0", "--placement-timeout", "60"]
    result = subprocess.run([sys.executable, "-m", "rlhfctl", "train-ppo", *args], env=ENV, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 1
    # Every answer of the random judge is scored: a number it wrote, or the fallback, counted.
    unparsed = [v for k, v in steps[0].items() if k.endswith("judge_unparsed")]
    assert unparsed and 0 <= unparsed[0] <= 1
    assert steps[0]["reward"] >= -1
