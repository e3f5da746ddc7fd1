"""train-ppo with a combined, cached reward end to end: a reward_func.py plus a custom-code reward model, each
logged as reward/NAME, the total their weighted sum, the cache's hit rate in the metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.reward_kinds_fixtures import write

pytestmark = pytest.mark.slow

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "WANDB_SILENT": "true",
       "PYTHONWARNINGS": "ignore::FutureWarning"}
ACCURACY = '''
def reward_func(queries, prompts, labels, **kwargs):
    return [float(l in q[len(p):]) + 0.1 * (len(q) % 3) for q, p, l in zip(queries, prompts, labels)]
'''


def test_combined_cached_reward_in_train_ppo(tiny_policy_dir, prompt_file, tmp_path):
    from rlhfctl.models.tiny_kinds import make_count_model

    rm = make_count_model(tmp_path / "rm", count_char="e")
    acc = write(tmp_path / "acc.py", ACCURACY)
    out = tmp_path / "out"
    args = ["--pretrain", str(tiny_policy_dir), "--prompt-data", str(prompt_file), "--input-key", "input",
            "--label-key", "answer", "--reward", f"acc={acc}:1.0", "--reward", f"rm={rm}:0.5",
            "--trust-remote-code", "--reward-cache-size", "64", "--save-path", str(out), "--ckpt-path",
            str(out / "ckpt"), "--rollout-batch-size", "2", "--n-samples-per-prompt", "4",
            "--micro-rollout-batch-size", "2", "--train-batch-size", "8", "--micro-train-batch-size", "8",
            "--generate-max-len", "16", "--prompt-max-len", "64", "--max-samples", "2", "--advantage-estimator",
            "group_norm", "--engine", "torch", "--init-kl-coef", "0"]
    result = subprocess.run([sys.executable, "-m", "rlhfctl", "train-ppo", *args], env=ENV, capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    (m,) = steps  # one step: 2 prompts x 4 samples
    assert m["reward"] == pytest.approx(m["reward/acc"] + 0.5 * m["reward/rm"], abs=1e-5)
    assert 0.0 <= m["reward/cache_hit_rate"] <= 1.0
    assert result.stderr.count("--trust-remote-code: running the Python code in") == 1
