"""--rollout auto (rollout/choice.py): a policy's size read from its config, and the backend of the nearest point
benchmarks/rollout_crossover.py measured."""

from __future__ import annotations

import json

import pytest

from rlhfctl.rollout import choice
from rlhfctl.rollout.choice import faster_rollout, faster_rollout_for, policy_params


@pytest.mark.parametrize("tied,kv_heads", [(False, 4), (True, 2)])
def test_the_parameter_count_from_config_json_is_the_model_s(tmp_path, tied, kv_heads):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=kv_heads, tie_word_embeddings=tied)
    model = LlamaForCausalLM(config)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert policy_params(saved) == sum(p.numel() for p in model.parameters())


def test_auto_takes_the_backend_of_the_nearest_measured_point(monkeypatch):
    monkeypatch.setattr(choice, "MEASURED", ((1_000_000, 4, 0.6), (1_000_000, 256, 1.3), (64_000_000, 4, 1.5)))
    assert faster_rollout(1_200_000, 8) == "hf"
    assert faster_rollout(900_000, 200) == "vllm"  # long responses: nearer the 256-token point
    assert faster_rollout(50_000_000, 4) == "vllm"
    assert faster_rollout(1_000_000, 4, use_gpus=True) == "vllm"  # vLLM is the GPU backend whatever the size


def test_the_demo_policy_is_read_from_its_folder():
    from tests.helpers import ARITHMETIC

    assert faster_rollout_for(ARITHMETIC / "policy", 4) == faster_rollout(1_054_848, 4)
