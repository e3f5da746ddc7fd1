"""train-ppo with LoRA and vLLM rollouts, end to end: the real CLI in a subprocess on the arithmetic example, one vLLM
engine, a small KL term. The engine's log-probs equal the actor's every step (the merged weights reached it under
the base names), the reference is the actor's base with the adapter off (no reference worker, a KL that moves),
and the saved adapter is in PEFT's format, loads with peft onto the base, and answers the held-out prompts greedily
as the engine's last evaluation did (after the last sync)."""

from __future__ import annotations

import json
import sys

import pytest

from tests.helpers import ARITHMETIC, ROOT, run_rlhfctl

pytestmark = pytest.mark.slow


def test_lora_run_keeps_vllm_in_sync_and_saves_an_adapter_peft_loads(tmp_path, ray_address):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out"
    args = ["--config", str(ARITHMETIC / "train_reward_func_file.yaml"), "--vllm-num-engines", "1", "--enforce-eager",
            "--vllm-gpu-memory-utilization", "0.01", "--max-samples", "128", "--num-episodes", "1",
            "--eval-steps", "-1", "--eval-max-samples", "100", "--lora-rank", "16", "--lora-alpha", "32",
            "--actor-learning-rate", "1e-3", "--init-kl-coef", "0.001", "--save-path", str(out),
            "--ckpt-path", str(out / "ckpt"), "--ray-address", ray_address, "--role-workers", "driver"]
    result = run_rlhfctl("train-ppo", *args, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in steps if m["step"] > 0]
    assert [m["step"] for m in train] == list(range(1, 5))
    for m in train:
        assert m["rollout/logprob_diff_max"] < 1e-3, m  # fp32: the engine samples with base + B·A x scale
        assert m["time/weight_sync"] > 0
    assert max(abs(m["kl"]) for m in train) > 0  # the reference (adapter off) differs from the trained policy
    placed = json.loads((out / "placement.json").read_text())
    assert "ref" not in json.dumps(placed)  # no reference workers: the actor's base is the reference

    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files and "model.safetensors" not in files
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["peft_type"]) == (16, 32, "LORA")
    base = AutoModelForCausalLM.from_pretrained(ARITHMETIC / "policy")
    policy = PeftModel.from_pretrained(base, out).eval()

    sys.path.insert(0, str(ARITHMETIC))
    from evaluate import score
    from make_data import read_jsonl

    hf = score(policy, AutoTokenizer.from_pretrained(out), read_jsonl(ARITHMETIC / "test.jsonl")[:100])
    assert abs(hf - train[-1]["eval/exact_match"]) <= 0.01, (hf, train[-1]["eval/exact_match"])
