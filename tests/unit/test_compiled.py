"""--torch-compile (models/compiled.py, models/decode.py) and the shared prompt forward (models/shared_prompt.py):
the compiled sampler draws what HF's sampling draws and decodes greedily what HF generate decodes, the compiled
forward gives the eager log-probs and gradients, a group's prompt run once gives the same log-probs and gradients as
each row run alone, and the option refuses what it cannot run."""

from __future__ import annotations

import pytest
import torch
import yaml

from rlhfctl.errors import ConfigError
from rlhfctl.models import shared_prompt
from rlhfctl.models.actor import action_log_probs, generate, load_policy, load_tokenizer, position_ids
from rlhfctl.models.compiled import forward_for, sampler_for
from rlhfctl.models.decode import CompiledSampler, next_tokens
from tests.helpers import run_cli

PROMPTS = ["a b c d e f", "g"]  # two lengths, so the shorter prompt is left-padded


@pytest.fixture(scope="module")
def one_layer_dir(tmp_path_factory):
    """Compiling costs per layer: one layer holds every kind of op the compiled graphs hold."""
    from rlhfctl.models.tiny import TinyArch, make_tiny_policy

    return make_tiny_policy(tmp_path_factory.mktemp("one_layer"), TinyArch(num_layers=1))


@pytest.fixture()
def policy(one_layer_dir):
    return load_tokenizer(str(one_layer_dir)), load_policy(str(one_layer_dir)).eval()


# ------------------------------------------------------------------------------------------------ sampling
def test_draws_follow_softmax_at_the_temperature_and_top_p_keeps_hfs_nucleus():
    from transformers.generation.logits_process import TopPLogitsWarper

    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    draws = 40_000
    for temperature, top_p in [(0.7, 1.0), (1.0, 0.8)]:
        tokens = next_tokens(logits.expand(draws, -1), temperature, top_p)
        kept = TopPLogitsWarper(top_p)(None, logits / temperature)  # HF's nucleus: -inf outside
        expected = kept.softmax(-1)[0]
        observed = torch.bincount(tokens, minlength=logits.shape[1]).float() / draws
        assert set(tokens.unique().tolist()) == set(torch.nonzero(expected > 0).flatten().tolist())
        assert torch.allclose(observed, expected, atol=0.01), (temperature, top_p, observed, expected)
    assert next_tokens(logits.expand(3, -1), 0.0, 1.0).tolist() == [0, 0, 0]
    assert next_tokens(logits.expand(3, -1), torch.tensor(0.0), 1.0).tolist() == [0, 0, 0]  # as the compiled step
    drawn = next_tokens(logits.expand(draws, -1), torch.tensor(1.0), 1.0)
    assert torch.allclose(torch.bincount(drawn, minlength=6).float() / draws, logits.softmax(-1)[0], atol=0.01)


def test_compiled_sampler_decodes_as_hf_generate_and_follows_weight_updates(policy):
    tokenizer, model = policy
    prompts = [p for p in PROMPTS for _ in range(3)]
    hf = generate(model, tokenizer, prompts, max_new_tokens=12, temperature=0.0)
    sampler = sampler_for(model, True)
    ours = generate(model, tokenizer, prompts, max_new_tokens=12, temperature=0.0, sampler=sampler)
    assert torch.equal(ours.sequences, hf.sequences) and torch.equal(ours.action_mask, hf.action_mask)
    assert ours.responses == hf.responses and ours.queries == hf.queries
    # One sample per prompt (n = 1, evaluation): each prompt's forward is its row's own.
    alone = generate(model, tokenizer, PROMPTS, max_new_tokens=12, temperature=0.0, sampler=sampler)
    assert torch.equal(alone.sequences, hf.sequences[::3])

    # An optimizer's in-place update: the compiled graph reads the new weights without compiling again.
    before = hf.sequences
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(3.0)
    hf = generate(model, tokenizer, prompts, max_new_tokens=12, temperature=0.0)
    assert not torch.equal(hf.sequences, before), "the update should change the greedy tokens"
    # An EOS that greedy decoding reaches mid-response: both stop that row there and pad after it.
    model.generation_config.eos_token_id = int(hf.sequences[0, -12 + 4])
    hf = generate(model, tokenizer, prompts, max_new_tokens=12, temperature=0.0)
    with torch._dynamo.config.patch(error_on_recompile=True):
        ours = generate(model, tokenizer, prompts, max_new_tokens=12, temperature=0.0, sampler=sampler)
    assert hf.action_mask.sum() < hf.action_mask.numel(), "the EOS should end some response early"
    assert torch.equal(ours.sequences, hf.sequences) and torch.equal(ours.action_mask, hf.action_mask)

    sampled = generate(model, tokenizer, prompts, max_new_tokens=12, temperature=1.0, sampler=sampler)
    assert sampled.sequences.shape[0] == len(prompts) and int(sampled.sequences.max()) < model.config.vocab_size
    assert len({tuple(row) for row in sampled.sequences.tolist()}) > 2  # a group's samples differ


def test_refuses_a_policy_whose_generation_config_changes_the_logits(policy):
    _, model = policy
    model.generation_config.repetition_penalty = 1.3
    model.generation_config.min_p = 0.05
    with pytest.raises(ConfigError, match="repetition_penalty=1.3, min_p=0.05"):
        CompiledSampler(model)


def test_takes_a_lora_policy_and_refuses_a_sliding_window_cache(policy):
    from peft import LoraConfig, get_peft_model
    from transformers import MistralConfig, MistralForCausalLM

    _, model = policy
    CompiledSampler(get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])))  # its base's class and config
    window = MistralForCausalLM(MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                              sliding_window=8))
    with pytest.raises(ConfigError, match="StaticSlidingWindowLayer"):
        CompiledSampler(window)


# ------------------------------------------------------------------------------------------------ forwards
def group_batch() -> tuple[torch.Tensor, torch.Tensor, int]:
    """2 prompts x 3 samples: prompt 1 left-padded, one response right-padded."""
    gen = torch.Generator().manual_seed(1)
    prompts = torch.randint(3, 300, (2, 5), generator=gen)
    prompt_mask = torch.ones_like(prompts)
    prompt_mask[1, :2] = 0
    prompts = prompts.masked_fill(prompt_mask == 0, 0)
    rows = torch.tensor([0, 0, 0, 1, 1, 1])
    responses = torch.randint(3, 300, (6, 7), generator=gen)
    action_mask = torch.ones_like(responses)
    action_mask[4, 3:] = 0
    responses = responses.masked_fill(action_mask == 0, 0)
    return torch.cat([prompts[rows], responses], 1), torch.cat([prompt_mask[rows], action_mask], 1), 7


def each_row_alone(model, sequences, mask, actions) -> torch.Tensor:
    return torch.cat([action_log_probs(model, sequences[i:i + 1], mask[i:i + 1], actions)
                      for i in range(sequences.shape[0])])


def test_a_groups_prompt_runs_once_with_each_rows_log_probs_and_gradients(tiny_policy_dir):
    model = load_policy(str(tiny_policy_dir))
    sequences, mask, actions = group_batch()
    assert shared_prompt.action_logits(model, sequences, mask, actions, position_ids(mask)) is not None
    assert shared_prompt.action_logits(model, sequences[::3], mask[::3], actions, position_ids(mask[::3])) is None

    valid = mask[:, -actions:]
    shared = action_log_probs(model, sequences, mask, actions)
    grads = torch.autograd.grad((shared * valid).sum(), list(model.parameters()))
    alone = each_row_alone(model, sequences, mask, actions)
    expected = torch.autograd.grad((alone * valid).sum(), list(model.parameters()))
    assert torch.allclose(shared * valid, alone * valid, atol=1e-5)
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)

    model.gradient_checkpointing_enable()  # its layers turn the cache off while training: the usual forward runs
    model.train()
    assert shared_prompt.action_logits(model, sequences, mask, actions, position_ids(mask)) is None


def test_compiled_forward_gives_the_eager_log_probs_and_gradients(one_layer_dir):
    """One row per prompt (the plain forward: compiling the shared one's two graphs would double the test's
    minute of C++ compilation; benchmarks/train_ppo.py --torch-compile runs that one)."""
    model = load_policy(str(one_layer_dir))
    compiled = forward_for(model, True)
    sequences, mask, actions = (t[::3] if torch.is_tensor(t) else t for t in group_batch())
    valid = mask[:, -actions:]
    eager = action_log_probs(model, sequences, mask, actions)
    want = torch.autograd.grad((eager * valid).sum(), list(model.parameters()))
    got = action_log_probs(compiled, sequences, mask, actions)
    assert torch.allclose(got * valid, eager * valid, atol=1e-5)
    for g, w in zip(torch.autograd.grad((got * valid).sum(), list(model.parameters())), want):
        assert torch.allclose(g, w, atol=1e-5, rtol=1e-4)
    longer = torch.cat([sequences, sequences[:, -2:]], 1), torch.cat([mask, mask[:, -2:]], 1)
    got = action_log_probs(compiled, *longer, actions + 2).detach()  # another length (dynamic shapes)
    assert torch.allclose(got, action_log_probs(model, *longer, actions + 2).detach(), atol=1e-5)


# ------------------------------------------------------------------------------------------------ options
def train_args(tmp_path, policy, prompts) -> list[str]:
    return ["train-ppo", "--pretrain", str(policy), "--prompt-data", str(prompts), "--remote-rm-url",
            str(tmp_path / "r.py"), "--rollout-batch-size", "2", "--train-batch-size", "4",
            "--micro-train-batch-size", "1", "--save-path", str(tmp_path / "out")]


@pytest.mark.parametrize("args, needle", [
    (["--torch-compile"], "--torch-compile runs with --engine torch"),
    (["--torch_compile", "--engine", "deepspeed", "--zero-stage", "1"], "--torch-compile runs with --engine torch"),
    (["--torch-compile", "--engine", "torch", "--packing-samples", "--ring-attn-size", "2",
      "--actor-num-gpus-per-node", "2"], "--torch-compile with --ring-attn-size"),
    (["--torch-compile", "--engine", "torch", "--packing-samples"], "--torch-compile with --packing-samples"),
])
def test_torch_compile_refuses_what_it_cannot_compile(args, needle, tiny_policy_dir, prompt_file, tmp_path, capsys):
    code, _, err = run_cli([*train_args(tmp_path, tiny_policy_dir, prompt_file), *args, "--print-config"], capsys)
    err = " ".join(err.split())
    assert code == 2 and needle in err and "Traceback" not in err, err


def test_torch_compile_is_on_with_the_torch_engine(tiny_policy_dir, prompt_file, tmp_path, capsys):
    code, out, err = run_cli([*train_args(tmp_path, tiny_policy_dir, prompt_file), "--torch_compile", "--engine",
                              "torch", "--print-config"], capsys)
    assert code == 0, err
    assert yaml.safe_load(out)["torch_compile"] is True


def test_check_reward_warns_that_torch_compile_needs_model_responses(tmp_path, prompt_file, capsys):
    func = tmp_path / "r.py"
    func.write_text("def reward_func(queries, prompts, labels):\n    return [1.0] * len(queries)\n")
    code, _, err = run_cli(["check-reward", str(func), "--prompt-data", str(prompt_file), "--torch-compile"], capsys)
    assert "--torch-compile: acts where check-reward samples responses in one shot from a policy" in " ".join(
        err.split()), err


def test_train_ppo_refuses_before_any_worker_a_policy_the_sampler_cannot_run(one_layer_dir, prompt_file, tmp_path,
                                                                              capsys):
    import shutil

    policy = tmp_path / "policy"
    shutil.copytree(one_layer_dir, policy)
    (policy / "generation_config.json").write_text('{"repetition_penalty": 1.2, "no_repeat_ngram_size": 3}')
    code, _, err = run_cli([*train_args(tmp_path, policy, prompt_file), "--torch-compile", "--engine", "torch"],
                           capsys)
    err = " ".join(err.split())
    assert code == 2 and "repetition_penalty=1.2, no_repeat_ngram_size=3" in err and "Traceback" not in err, err


def test_without_a_cpu_compiler_the_run_says_what_to_install(one_layer_dir, monkeypatch):
    from rlhfctl.models import compiled

    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="none of g\\+\\+, c\\+\\+, clang\\+\\+ is on PATH"):
        compiled.check_can_compile(str(one_layer_dir), samples_with_hf=True, has_gpus=False)
    compiled.check_can_compile(str(one_layer_dir), samples_with_hf=True, has_gpus=True)  # GPU kernels: Triton
