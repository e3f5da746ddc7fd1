"""LoRA (models/lora.py) on real PEFT and real engines: only the adapter trains and holds optimizer state (torch and
DeepSpeed ZeRO 0-3), the merged weights equal PEFT's merge_and_unload under the base model's names (what vLLM
receives), the reference is the base with the adapter off, the saved adapter loads with peft and generates what the
trained policy generates, checkpoints resume the adapter and its optimizer, and bad LoRA options exit 2."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from rlhfctl.config import LoRAArgs
from rlhfctl.distributed.engine_factory import build_engine
from rlhfctl.errors import ConfigError
from rlhfctl.models.actor import action_log_probs, generate, load_policy, load_tokenizer
from rlhfctl.models.lora import (adapters_off, add_adapters, merged_state_dict, save_lora, trainable_share,
                                 with_adapters)
from rlhfctl.rollout.weight_sync import sync_tensors
from tests.helpers import run_cli
from tests.helpers.dist import own_process_group  # noqa: F401 - autouse fixture

Z3_ALL = {"zero_optimization": {"stage3_param_persistence_threshold": 0}}  # partition even tiny tensors
LORA = LoRAArgs(lora_rank=4, lora_alpha=8)


def _lora_policy(folder: Path, lora: LoRAArgs = LORA) -> Any:
    return add_adapters(load_policy(str(folder)), lora)


def _nudged(model: Any, seed: int = 0) -> Any:
    """B starts at zero (the adapter is a no-op until trained); give it values so merges are not trivially equal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def _train_steps(eng: Any, steps: int = 2) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(10, 500, (2, 12), generator=g)
        eng.backward(eng.module(input_ids=ids, labels=ids).loss)
        assert eng.step()["stepped"]


@pytest.mark.parametrize("kind, stage", [("torch", 0), ("deepspeed", 0), ("deepspeed", 2), ("deepspeed", 3)],
                         ids=["torch", "ds-z0", "ds-z2", "ds-z3"])
def test_only_the_adapter_trains_and_holds_optimizer_state(tiny_policy_dir, kind, stage):
    model = _lora_policy(tiny_policy_dir)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(".lora_A." in n or ".lora_B." in n for n in trained)
    assert 0 < trainable_share(model) < 0.1
    eng = build_engine(model, kind=kind, zero_stage=stage, learning_rate=1e-2, total_steps=4, warmup_ratio=0.0,
                       ds_config_overrides=Z3_ALL)
    before = merged_state_dict(model, eng.gathered)
    with eng.gathered(list(model.parameters())):
        base_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    _train_steps(eng)
    with eng.gathered(list(model.parameters())):
        base_after = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert all(torch.equal(base_before[n], base_after[n]) for n in base_before)  # the base never moves
    after = merged_state_dict(model, eng.gathered)
    assert before.keys() == after.keys() and any(not torch.equal(before[n], after[n]) for n in before)
    optimizer = eng._ds.optimizer if kind == "deepspeed" else eng._optimizer
    held = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    n_trained = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel()
                    for p in model.parameters() if p.requires_grad)
    # ZeRO 1-3 flatten the trained parameters into partitions of their own: as many elements (and no base weight)
    assert held == n_trained or (kind == "deepspeed" and stage > 0 and held <= n_trained + 64), (held, n_trained)


def test_merged_weights_equal_peft_merge_under_the_base_names(tiny_policy_dir):
    model = _nudged(_lora_policy(tiny_policy_dir, LoRAArgs(lora_rank=4, lora_alpha=16, target_modules=["q_proj",
                                                                                                        "down_proj"])))
    plain_names = [n for n, _ in load_policy(str(tiny_policy_dir)).named_parameters()]
    sent = sync_tensors(model)
    assert [t.name for t in sent] == plain_names  # what vLLM is sent: the base names, in the base order
    assert not any("lora" in t.name or "base_layer" in t.name for t in sent)
    reference = copy.deepcopy(model).merge_and_unload().state_dict()
    merged = merged_state_dict(model)
    assert merged.keys() <= reference.keys()
    assert max((merged[k] - reference[k]).abs().max().item() for k in merged) == 0.0
    changed = [k for k in merged if not torch.equal(merged[k], load_policy(str(tiny_policy_dir)).state_dict()[k])]
    assert changed and all("q_proj" in k or "down_proj" in k for k in changed)


def test_the_reference_is_the_base_with_the_adapter_off(tiny_policy_dir):
    model = _nudged(_lora_policy(tiny_policy_dir)).eval()
    base = load_policy(str(tiny_policy_dir)).eval()
    ids = torch.randint(10, 500, (2, 12), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        with adapters_off(model):
            ref = action_log_probs(model, ids, mask, 5)
        policy = action_log_probs(model, ids, mask, 5)
        expected = action_log_probs(base, ids, mask, 5)
    assert torch.allclose(ref, expected, atol=1e-6)
    assert not torch.allclose(policy, expected, atol=1e-3)  # outside the block the adapter acts


def test_saved_adapter_loads_with_peft_and_generates_what_the_policy_does(tiny_policy_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(str(tiny_policy_dir))
    model = _lora_policy(tiny_policy_dir)
    eng = build_engine(model, kind="torch", zero_stage=0, learning_rate=5e-2, total_steps=4, warmup_ratio=0.0)
    _train_steps(eng, 3)
    model.eval()
    adapter_dir, merged_dir = tmp_path / "adapter", tmp_path / "merged"
    save_lora(model, str(adapter_dir), eng.state_dict_for_save(), merged=False)
    save_lora(model, str(merged_dir), merged_state_dict(model), merged=True)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter_dir.iterdir()}
    assert not (adapter_dir / "model.safetensors").exists()  # the adapter only, not the base again
    prompts = ["1 + 2 =", "the cat", "hello world"]

    def greedy(m: Any) -> list[str]:
        return generate(m, tok, prompts, max_new_tokens=8, temperature=0.0).responses

    trained = greedy(model)
    loaded = PeftModel.from_pretrained(load_policy(str(tiny_policy_dir)), str(adapter_dir)).eval()
    assert greedy(loaded) == trained
    assert greedy(AutoModelForCausalLM.from_pretrained(merged_dir).eval()) == trained
    assert greedy(load_policy(str(tiny_policy_dir)).eval()) != trained  # training changed what it says
    # --lora-path: a new run starts from the saved adapter, trainable
    again = with_adapters(load_policy(str(tiny_policy_dir)), LoRAArgs(lora_path=str(adapter_dir))).eval()
    assert greedy(again) == trained and any(p.requires_grad for p in again.parameters())


@pytest.mark.parametrize("kind, stage", [("torch", 0), ("deepspeed", 2)], ids=["torch", "ds-z2"])
def test_checkpoint_resumes_the_adapter_and_its_optimizer(tiny_policy_dir, tmp_path, kind, stage):
    def engine() -> Any:
        return build_engine(_lora_policy(tiny_policy_dir), kind=kind, zero_stage=stage, learning_rate=1e-2,
                            total_steps=6, warmup_ratio=0.0)

    first = engine()
    _train_steps(first, 2)
    first.save_checkpoint(str(tmp_path / "ckpt"))
    _train_steps(first, 1)
    resumed = engine()
    resumed.load_checkpoint(str(tmp_path / "ckpt"))
    assert resumed.global_step == 2
    _train_steps(resumed, 1)  # the same third update, Adam moments included
    a, b = merged_state_dict(first.unwrapped), merged_state_dict(resumed.unwrapped)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_unknown_target_modules_are_a_config_error(tiny_policy_dir):
    with pytest.raises(ConfigError, match="--target-modules no_such_proj"):
        _lora_policy(tiny_policy_dir, LoRAArgs(lora_rank=4, target_modules=["no_such_proj"]))


@pytest.mark.parametrize("args, needle", [
    (["--save-merged"], "--save-merged has no effect without LoRA"),
    (["--lora-alpha", "32"], "--lora-alpha has no effect without LoRA"),
    (["--lora-rank", "-1"], "--lora-rank"),
    (["--lora-rank", "8", "--lora-path", "/no/such/adapter"], "--lora-path /no/such/adapter: not a PEFT adapter"),
    (["--lora-rank", "8", "--load-in-4bit", "--zero-stage", "3"], "bitsandbytes' packed 4-bit weights cannot be"),
    (["--lora-rank", "8", "--enable-ema", "--save-merged"], "--enable-ema with --save-merged"),
])
def test_bad_lora_options_exit_2_before_ray(args, needle, tiny_policy_dir, prompt_file, tmp_path, capsys):
    import ray

    reward = tmp_path / "r.py"
    reward.write_text("def reward_func(queries, prompts, labels):\n    return [0.0] * len(queries)\n")
    code, out, err = run_cli(["train-ppo", "--pretrain", str(tiny_policy_dir), "--prompt-data", str(prompt_file),
                              "--remote-rm-url", str(reward), "--rollout-batch-size", "2", "--train-batch-size", "2",
                              "--micro-train-batch-size", "1", "--save-path", str(tmp_path / "out"), *args], capsys)
    assert code == 2, err
    assert needle in " ".join(err.split()) and "Traceback" not in out + err
    assert not ray.is_initialized()


def test_packed_forwards_run_through_the_adapter(tiny_policy_dir):
    """--packing-samples passes its own keyword arguments; PEFT's wrapper must hand them on unchanged."""
    model = _nudged(_lora_policy(tiny_policy_dir)).eval()
    ids = torch.randint(10, 500, (2, 12), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # a left-padded row
    with torch.no_grad():
        padded = action_log_probs(model, ids, mask, 5)
        packed = action_log_probs(model, ids, mask, 5, packed=True)
    assert torch.allclose(padded, packed, atol=1e-5)


def test_a_lora_critic_trains_its_adapter_and_head_and_saves_merged(tiny_policy_dir, tmp_path):
    from rlhfctl.models.critic import Critic

    critic = Critic.from_pretrained(str(tiny_policy_dir))
    critic.backbone = _nudged(with_adapters(critic.backbone, LORA))
    trained = {n for n, p in critic.named_parameters() if p.requires_grad}
    assert "value_head.weight" in trained and all("lora_" in n for n in trained - {"value_head.weight"})
    ids = torch.randint(10, 500, (2, 12), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    critic.eval()
    with torch.no_grad():
        values = critic(ids, mask, 5)
    critic.save_pretrained(tmp_path / "critic", state_dict=merged_state_dict(critic))
    reloaded = Critic.from_pretrained(str(tmp_path / "critic")).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(ids, mask, 5), values, atol=1e-5)  # base + adapter merged, same head
