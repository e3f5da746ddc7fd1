"""Shared test set-up: offline, one torch thread, and tiny models built once per session."""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

PROMPTS = [
    {"input": "What is 2 + 3?", "answer": "5"},
    {"input": "What is 10 - 4?", "answer": "6"},
    {"input": "What is 7 * 6?", "answer": "42"},
    {"input": "What is 9 + 9?", "answer": "18"},
    {"input": "What is 100 - 1?", "answer": "99"},
    {"input": "What is 3 * 3?", "answer": "9"},
]


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory):
    """A tiny LlamaForCausalLM + tokenizer folder (hidden 64, 2 layers, 2 heads, head_dim 32). Read-only."""
    from rlhfctl.models.tiny import TinyArch, make_tiny_policy

    arch = TinyArch(hidden_size=64, num_layers=2, num_heads=2)
    return make_tiny_policy(tmp_path_factory.mktemp("tiny_policy"), arch)


@pytest.fixture(scope="session")
def tiny_rm_seqcls_dir(tmp_path_factory):
    """A tiny LlamaForSequenceClassification reward model (num_labels=1). Read-only."""
    from rlhfctl.models.tiny import make_tiny_reward_model

    return make_tiny_reward_model(tmp_path_factory.mktemp("tiny_rm_seqcls"), format="seqcls")


@pytest.fixture(scope="session")
def tiny_rm_openrlhf_dir(tmp_path_factory):
    """A tiny reward model in OpenRLHF's layout: head "value_head", normalize_reward, mean 0.5, std 2.0."""
    from rlhfctl.models.tiny import make_tiny_reward_model

    return make_tiny_reward_model(
        tmp_path_factory.mktemp("tiny_rm_openrlhf"),
        format="openrlhf",
        value_head_prefix="value_head",
        normalize_reward=True,
        mean=0.5,
        std=2.0,
    )


@pytest.fixture(scope="session")
def prompt_file(tmp_path_factory):
    """A small .jsonl prompt file with keys "input" and "answer" (rows in `PROMPTS`). Read-only."""
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in PROMPTS), encoding="utf-8")
    return path
