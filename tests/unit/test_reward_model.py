"""Loading reward models in both layouts, reading the reward where OpenRLHF reads it, and ModelReward's batching."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from rlhfctl.errors import UsageError
from rlhfctl.models.reward import load_reward_model
from rlhfctl.rewards.batched import plan_batches
from rlhfctl.rewards.model import ModelReward

TEXTS = [
    "What is 2 + 3? The answer is 5.",
    "a",
    "Tell me a story about a cat and a dog who live in a house by the river, and what they learn about the world.",
    "User: why?\nAssistant: because.",
    "one two three four five six seven eight nine ten " * 6,
]


def model_reward(path, **kw) -> ModelReward:
    opts = {k: kw.pop(k) for k in ("max_len", "batch_size", "max_batch_tokens") if k in kw}
    model, tokenizer = load_reward_model(path, **kw)
    return ModelReward(model, tokenizer, **opts)


@pytest.fixture(scope="module")
def seqcls(tiny_rm_seqcls_dir) -> ModelReward:
    return model_reward(tiny_rm_seqcls_dir)


def test_both_layouts_read_the_same_reward(seqcls, tiny_rm_openrlhf_dir):
    # The fixtures hold the same weights in the two layouts, so the loaders must agree exactly.
    openrlhf = model_reward(tiny_rm_openrlhf_dir)
    assert openrlhf.score(TEXTS).rewards == pytest.approx(seqcls.score(TEXTS).rewards, abs=1e-6)


def test_reward_is_the_sequence_classifier_at_the_appended_eos(seqcls, tiny_rm_seqcls_dir):
    from transformers import AutoModelForSequenceClassification

    reference = AutoModelForSequenceClassification.from_pretrained(tiny_rm_seqcls_dir).eval()
    for text in TEXTS:
        ids = seqcls.encode([text])[0]
        assert ids[-1] == seqcls.tokenizer.eos_token_id
        with torch.no_grad():
            expected = reference(torch.tensor([ids])).logits[0, 0].item()  # one unpadded row: read at its last token
        assert seqcls.score([text]).rewards[0] == pytest.approx(expected, abs=1e-5)


def test_normalisation_uses_the_mean_and_std_in_config_json(tiny_rm_openrlhf_dir):
    config = json.loads((tiny_rm_openrlhf_dir / "config.json").read_text())
    assert (config["mean"], config["std"]) == (0.5, 2.0)
    raw = model_reward(tiny_rm_openrlhf_dir).score(TEXTS).rewards
    normalised = model_reward(tiny_rm_openrlhf_dir, normalize_reward=True).score(TEXTS).rewards
    assert normalised == pytest.approx([(r - 0.5) / 2.0 for r in raw], abs=1e-6)


@pytest.mark.parametrize("layout", ["seqcls", "openrlhf"])
def test_reward_does_not_depend_on_batch_companions(layout, request):
    source = model_reward(request.getfixturevalue(f"tiny_rm_{layout}_dir"), batch_size=64, max_batch_tokens=10**6)
    alone = [source.score([t]).rewards[0] for t in TEXTS]
    together = source.score(TEXTS * 3).rewards
    assert max(abs(a - b) for a, b in zip(alone * 3, together)) < 1e-5
    # Also padded next to a much longer text, in one forward pass.
    ids = source.encode([TEXTS[1], TEXTS[4] * 4])
    assert source.forward(ids)[0] == pytest.approx(alone[1], abs=1e-5)


def test_queries_are_stripped_of_pad_and_eos_and_get_exactly_one_eos(seqcls):
    tok = seqcls.tokenizer
    messy = f"{tok.pad_token}{tok.eos_token}hello world{tok.eos_token}{tok.eos_token}{tok.pad_token}"
    ids = seqcls.encode([messy])[0]
    assert ids == seqcls.encode(["hello world"])[0]
    assert ids[-1] == tok.eos_token_id and tok.eos_token_id not in ids[:-1] and tok.pad_token_id not in ids
    assert seqcls.score([messy]).rewards == pytest.approx(seqcls.score(["hello world"]).rewards, abs=1e-6)


def test_max_len_cuts_from_the_left_so_the_end_survives(tiny_rm_seqcls_dir, seqcls):
    short = model_reward(tiny_rm_seqcls_dir, max_len=16)
    long_text = TEXTS[4] * 3
    full = seqcls.encode([long_text])[0]
    assert short.encode([long_text])[0] == full[-16:]
    assert short.score([long_text]).rewards[0] == pytest.approx(seqcls.forward([full[-16:]])[0], abs=1e-6)


def test_value_head_found_from_flag_config_or_weights(tiny_rm_openrlhf_dir, tmp_path):
    expected = model_reward(tiny_rm_openrlhf_dir).score(TEXTS[:2]).rewards
    assert model_reward(tiny_rm_openrlhf_dir, value_head_prefix="value_head").score(TEXTS[:2]).rewards == expected
    # No value_head_prefix in config.json: the one [1, hidden] weight outside the base model is the head.
    bare = tmp_path / "rm"
    shutil.copytree(tiny_rm_openrlhf_dir, bare)
    config = json.loads((bare / "config.json").read_text())
    del config["value_head_prefix"]
    (bare / "config.json").write_text(json.dumps(config))
    assert model_reward(bare).score(TEXTS[:2]).rewards == expected


def test_wrong_value_head_names_the_heads_found(tiny_rm_openrlhf_dir):
    with pytest.raises(UsageError, match=r"'score'.*--value-head-prefix.*heads found: value_head"):
        load_reward_model(tiny_rm_openrlhf_dir, value_head_prefix="score")


def test_normalize_without_mean_and_std_is_refused(tiny_rm_seqcls_dir, tmp_path):
    bare = tmp_path / "rm"
    shutil.copytree(tiny_rm_seqcls_dir, bare)
    config = json.loads((bare / "config.json").read_text())
    config.pop("mean"), config.pop("std")
    (bare / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match="no numeric 'mean' and 'std'"):
        load_reward_model(bare, normalize_reward=True)


def test_not_a_model_folder(tmp_path, tiny_policy_dir):
    with pytest.raises(UsageError, match="no such folder"):
        load_reward_model(tmp_path / "missing")
    with pytest.raises(UsageError, match="no config.json"):
        load_reward_model(tmp_path)
    with pytest.raises(UsageError, match="one output per text"):  # a causal LM: its only head is lm_head
        load_reward_model(tiny_policy_dir)


def test_flash_attn_without_a_gpu_warns_once_and_uses_sdpa(tiny_rm_seqcls_dir, seqcls, caplog):
    with caplog.at_level(logging.WARNING, logger="rlhfctl.models.reward"):
        first = model_reward(tiny_rm_seqcls_dir, flash_attn=True)
        model_reward(tiny_rm_seqcls_dir, flash_attn=True)
    warnings = [r for r in caplog.records if "--flash-attn" in r.getMessage()]
    assert len(warnings) <= 1  # once per process (an earlier test in this process may have triggered it)
    assert first.model.base.config._attn_implementation == "sdpa"
    assert first.score(TEXTS).rewards == pytest.approx(seqcls.score(TEXTS).rewards, abs=1e-6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_load_in_4bit_without_cuda_is_a_clear_error(tiny_rm_seqcls_dir):
    with pytest.raises(UsageError, match="--load-in-4bit needs bitsandbytes on a CUDA GPU"):
        load_reward_model(tiny_rm_seqcls_dir, load_in_4bit=True)


def test_slow_tokenizer_option_scores_the_same(tiny_rm_seqcls_dir, seqcls):
    slow = model_reward(tiny_rm_seqcls_dir, disable_fast_tokenizer=True)
    assert slow.score(TEXTS).rewards == pytest.approx(seqcls.score(TEXTS).rewards, abs=1e-6)


def test_bf16_scores_close_to_fp32(tiny_rm_seqcls_dir, seqcls):
    bf16 = model_reward(tiny_rm_seqcls_dir, bf16=True)
    assert bf16.model.base.dtype == torch.bfloat16
    assert bf16.score(TEXTS).rewards == pytest.approx(seqcls.score(TEXTS).rewards, abs=0.1)


def test_plan_batches_sorts_and_respects_the_budgets():
    lengths = [50, 3, 7, 400, 9, 8, 60, 2]
    batches = plan_batches(lengths, batch_size=3, max_batch_tokens=120)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or max(lengths[i] for i in batch) * len(batch) <= 120
    assert [3] in batches  # longer than the budget: alone
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat)
