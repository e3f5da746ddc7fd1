"""Tiny offline models: they save, load offline with the Auto classes, are deterministic and look like the real ones."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rlhfctl.models.tiny import (
    TinyArch,
    build_char_tokenizer,
    build_tokenizer,
    make_tiny_policy,
    make_tiny_reward_model,
)

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]


def _keys(folder) -> set[str]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return set(f.keys())


def test_tokenizer_is_deterministic_and_sized():
    a, b = build_tokenizer(), build_tokenizer()
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    assert len(a) == 512
    assert (a.pad_token, a.bos_token, a.eos_token) == ("<pad>", "<s>", "</s>")
    assert (a.pad_token_id, a.bos_token_id, a.eos_token_id) == (0, 1, 2)
    text = "What is 123 + 45? The answer is 168. Ünïcödé 🙂"
    assert a.decode(a(text).input_ids) == text  # byte-level: nothing is unknown
    with pytest.raises(ValueError, match="vocab_size"):
        build_tokenizer(vocab_size=100)


def test_chat_template_renders():
    tok = build_tokenizer()
    prompt = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert prompt == "<s><|system|>Be brief.</s><|user|>What is 2 + 3?</s><|assistant|>"
    no_gen = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=False)
    assert no_gen == prompt.removesuffix("<|assistant|>")
    ids = tok(prompt).input_ids
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.convert_ids_to_tokens(ids[-1]) == "<|assistant|>"
    with pytest.raises(Exception, match="unknown role"):
        tok.apply_chat_template([{"role": "robot", "content": "x"}], tokenize=False)


def test_policy_saves_and_loads_offline(tiny_policy_dir):
    files = {p.name for p in tiny_policy_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    tok = AutoTokenizer.from_pretrained(tiny_policy_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_policy_dir)
    cfg = model.config
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (64, 2, 2)
    assert cfg.hidden_size // cfg.num_attention_heads >= 32
    ids = (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    assert (cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id) == ids
    assert cfg.vocab_size == len(tok)
    prompt = tok.apply_chat_template(MESSAGES[1:], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>")
    inputs = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] <= inputs.input_ids.shape[1] + 4


def test_same_seed_same_weights(tmp_path):
    state = torch.get_rng_state()
    a = load_file(str(make_tiny_policy(tmp_path / "a", TinyArch(seed=3)) / "model.safetensors"))
    b = load_file(str(make_tiny_policy(tmp_path / "b", TinyArch(seed=3)) / "model.safetensors"))
    c = load_file(str(make_tiny_policy(tmp_path / "c", TinyArch(seed=4)) / "model.safetensors"))
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("hidden, heads", [(64, 4), (96, 4), (60, 7)])
def test_head_dim_validated(tmp_path, hidden, heads):
    with pytest.raises(ValueError, match="head_dim|multiple"):
        TinyArch(hidden_size=hidden, num_heads=heads)  # before anything is built or written
    assert not any(tmp_path.iterdir())


def test_seqcls_reward_model(tiny_rm_seqcls_dir):
    tok = AutoTokenizer.from_pretrained(tiny_rm_seqcls_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_rm_seqcls_dir)
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    batch = tok(["a short text", "a rather longer text about numbers"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 1) and torch.isfinite(logits).all()
    assert abs(logits[0, 0] - logits[1, 0]) > 1e-4  # texts get different rewards


def test_openrlhf_reward_model_layout(tiny_rm_openrlhf_dir):
    config = json.loads((tiny_rm_openrlhf_dir / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["architectures"] == ["RewardModel"]  # the class name OpenRLHF saves from
    assert config["value_head_prefix"] == "value_head"
    assert config["normalize_reward"] is True
    assert (config["mean"], config["std"]) == (0.5, 2.0)
    keys = _keys(tiny_rm_openrlhf_dir)
    assert "value_head.weight" in keys and "model.embed_tokens.weight" in keys
    assert all(k.startswith("model.") for k in keys - {"value_head.weight"})
    assert not any(k.startswith(("lm_head", "score")) for k in keys)
    with safe_open(str(tiny_rm_openrlhf_dir / "model.safetensors"), "pt") as f:
        assert tuple(f.get_tensor("value_head.weight").shape) == (1, 64)
    assert AutoConfig.from_pretrained(tiny_rm_openrlhf_dir).mean == 0.5
    AutoTokenizer.from_pretrained(tiny_rm_openrlhf_dir)


def test_openrlhf_format_is_seqcls_rekeyed(tiny_rm_seqcls_dir, tiny_rm_openrlhf_dir):
    """Same seed: the OpenRLHF base + value head give the seqcls model's reward (as OpenRLHF's forward computes it)."""
    tok = AutoTokenizer.from_pretrained(tiny_rm_seqcls_dir)
    batch = tok(["one text", "another, longer text here"], padding=True, return_tensors="pt")
    seqcls = AutoModelForSequenceClassification.from_pretrained(tiny_rm_seqcls_dir)
    base, info = AutoModel.from_pretrained(tiny_rm_openrlhf_dir, output_loading_info=True)
    assert not info["missing_keys"]
    head = load_file(str(tiny_rm_openrlhf_dir / "model.safetensors"))["value_head.weight"]
    with torch.no_grad():
        expected = seqcls(**batch).logits[:, 0]
        hidden = base(**batch).last_hidden_state
        values = hidden @ head[0]
        last = batch.attention_mask.sum(1) - 1  # right padding: last real token
        got = values[torch.arange(2), last]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_openrlhf_with_score_prefix_loads_as_seqcls(tmp_path):
    """With value_head_prefix "score" (newer OpenRLHF's fixed name) transformers' seqcls class reads it directly."""
    folder = make_tiny_reward_model(tmp_path, format="openrlhf", value_head_prefix="score")
    assert "score.weight" in _keys(folder)
    _, info = AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"]


def test_reward_model_argument_checks(tmp_path):
    with pytest.raises(ValueError, match="format"):
        make_tiny_reward_model(tmp_path, format="pickle")
    with pytest.raises(ValueError, match="value_head_prefix"):
        make_tiny_reward_model(tmp_path, format="seqcls", value_head_prefix="value_head")
    with pytest.raises(ValueError, match="std"):
        make_tiny_reward_model(tmp_path, format="openrlhf", std=0.0)


def test_char_tokenizer_round_trips(tmp_path):
    tok = build_char_tokenizer("0123456789+-*= ")
    text = "12 + 34 = 46"
    ids = tok(text).input_ids
    assert len(ids) == len(text)  # one token per character
    assert tok.decode(ids) == text
    assert tok.decode(tok("1x2").input_ids) == "1<unk>2"
    chat = tok.apply_chat_template([{"role": "user", "content": "1+2="}], tokenize=False, add_generation_prompt=True)
    assert chat == "<s><|user|>1+2=</s><|assistant|>"
    tokens = tok.convert_ids_to_tokens(tok(chat).input_ids)
    assert tokens == ["<s>", "<|user|>", "1", "+", "2", "=", "</s>", "<|assistant|>"]
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(text).input_ids == ids and loaded.decode(ids) == text
    assert loaded.pad_token_id == tok.pad_token_id and loaded.eos_token == "</s>"
    user = [{"role": "user", "content": "1+2="}]
    again = loaded.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert again == chat
    with pytest.raises(ValueError):
        build_char_tokenizer("")
