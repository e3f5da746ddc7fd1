"""--enable-ema and PPO-ptx (--pretrain-data, --ptx-coef): the formulas against hand-computed values, the actor's
moving average on real engines (torch, and DeepSpeed ZeRO-3 whose weights are partitioned), the pretraining batches,
and OpenRLHF's spellings of the options in three vintages."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch.testing import assert_close

from rlhfctl.config import PtxArgs
from rlhfctl.ppo.functional import ema_update_, ptx_loss
from tests.helpers import run_cli, write_jsonl
from tests.helpers.dist import own_process_group  # noqa: F401 - autouse fixture

LN2, LN3 = math.log(2.0), math.log(3.0)
TRAIN = ["train-ppo", "--pretrain", "p", "--prompt-data", "d.jsonl", "--remote-rm-url", "http://x"]


# ------------------------------------------------------------------------------------------------ ptx_loss
def test_ptx_loss_is_the_mean_next_token_nll_over_real_tokens():
    # vocab 2. Logits [0, 0] give p = 1/2 each; [ln 3, 0] give p(0) = 3/4, p(1) = 1/4; 99 marks unread logits.
    half, skew, junk = [0.0, 0.0], [LN3, 0.0], [99.0, -99.0]
    logits = torch.tensor([[half, skew, junk],    # ids 1 0 1: predicts 0 from [1] (-ln 1/2), 1 from [1 0] (-ln 1/4)
                           [skew, junk, junk],    # ids 0 1 pad: predicts 1 (-ln 1/4); the pad is no target
                           [junk, skew, junk]],   # pad 1 0: the first real token has no context; predicts 0 (-ln 3/4)
                          dtype=torch.float64)
    ids = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 1, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 1, 1]])
    # tokens: ln 2, 2 ln 2 | 2 ln 2 | ln 4 - ln 3  ->  mean over 4 = (7 ln 2 - ln 3) / 4
    assert_close(ptx_loss(logits, ids, mask), torch.tensor((7 * LN2 - LN3) / 4, dtype=torch.float32))


def test_ptx_loss_has_the_gradient_of_the_log_likelihood():
    logits = torch.zeros(1, 2, 2, requires_grad=True)
    ptx_loss(logits, torch.tensor([[0, 1]]), torch.ones(1, 2)).backward()
    # d(-log softmax(l)_1)/dl = softmax(l) - onehot(1) = [1/2, -1/2] at position 0; position 1 predicts nothing
    assert_close(logits.grad, torch.tensor([[[0.5, -0.5], [0.0, 0.0]]]))


# ------------------------------------------------------------------------------------------------ ema_update_
def test_ema_update_moves_beta_of_the_way_to_keep_and_the_rest_to_the_weights():
    ema = torch.tensor([1.0, -2.0])
    ema_update_(ema, torch.tensor([3.0, 2.0]), 0.75)  # 0.75 * 1 + 0.25 * 3 = 1.5 ; 0.75 * -2 + 0.25 * 2 = -1
    assert_close(ema, torch.tensor([1.5, -1.0]))
    ema_update_(ema, torch.tensor([3.0, 2.0]), 0.75)  # 1.125 + 0.75 = 1.875 ; -0.75 + 0.5 = -0.25
    assert_close(ema, torch.tensor([1.875, -0.25]))
    ema_update_(ema, torch.tensor([3.0, 2.0], dtype=torch.bfloat16), 0.0)  # beta 0: the weights, kept in fp32
    assert ema.dtype == torch.float32 and ema.tolist() == [3.0, 2.0]
    with pytest.raises(ValueError, match="beta"):
        ema_update_(ema, ema, 1.5)


# ------------------------------------------------------------------------------------------------ PolicyEMA
def _whole(engine) -> dict[str, torch.Tensor]:
    with engine.gathered_params():
        return {n: p.detach().float().clone() for n, p in engine.unwrapped.named_parameters()}


@pytest.mark.parametrize("kind, stage", [("torch", 0), ("deepspeed", 3)], ids=["torch", "ds-z3"])
def test_the_saved_policy_is_the_average_of_the_weights_after_each_update(kind, stage, tiny_policy_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from rlhfctl.distributed.engine_factory import build_engine
    from rlhfctl.ppo.ema import PolicyEMA

    model = AutoModelForCausalLM.from_pretrained(tiny_policy_dir)
    model.model.norm.weight.requires_grad_(False)  # a frozen parameter keeps its loaded value in the average
    engine = build_engine(model, kind=kind, zero_stage=stage, learning_rate=1e-2, total_steps=4, warmup_ratio=0.0,
                          train_batch_size=1, micro_train_batch_size=1,
                          ds_config_overrides={"zero_optimization": {"stage3_param_persistence_threshold": 0}})
    if stage == 3:
        assert engine.unwrapped.lm_head.weight.numel() == 0  # partitioned: the average must gather each weight
    ema = PolicyEMA(engine, beta=0.5, keep=True)
    weights = [_whole(engine)]
    ids = torch.randint(10, 500, (1, 12), generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        engine.backward(engine.module(input_ids=ids, labels=ids).loss)
        assert engine.step()["stepped"]
        ema.update()
        weights.append(_whole(engine))
    # beta 1/2: a2 = 1/2 a1 + 1/2 w2 = 1/4 w0 + 1/4 w1 + 1/2 w2
    name = "model.layers.0.mlp.up_proj.weight"
    w0, w1, w2 = (w[name] for w in weights)
    assert not torch.equal(w0, w2)
    assert_close(ema.averages[name], 0.25 * w0 + 0.25 * w1 + 0.5 * w2)
    assert "model.norm.weight" not in ema.averages
    state = ema.policy_state(engine.state_dict_for_save())
    assert_close(state[name], ema.averages[name])
    assert_close(state["model.norm.weight"], weights[0]["model.norm.weight"])
    # the checkpoint carries the averages: a fresh average of the same weights, loaded, is the saved one
    ema.save(str(tmp_path))
    other = PolicyEMA(engine, beta=0.5, keep=True)
    assert not torch.equal(other.averages[name], ema.averages[name])
    other.load(str(tmp_path))
    assert_close(other.averages[name], ema.averages[name], rtol=0, atol=0)


def test_a_tied_head_is_saved_as_the_average_of_its_one_weight(tiny_policy_dir):
    from transformers import AutoConfig, AutoModelForCausalLM

    from rlhfctl.distributed.engine_factory import build_engine
    from rlhfctl.ppo.ema import PolicyEMA

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_policy_dir, tie_word_embeddings=True))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    engine = build_engine(model, kind="torch", learning_rate=1e-2, total_steps=2, warmup_ratio=0.0,
                          train_batch_size=1, micro_train_batch_size=1)
    ema = PolicyEMA(engine, beta=0.5, keep=True)
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(1.0)
    ema.update()
    state = ema.policy_state({k: v.detach().clone() for k, v in model.state_dict().items()})
    assert_close(state["lm_head.weight"], model.model.embed_tokens.weight.detach() - 0.5)
    assert_close(state["model.embed_tokens.weight"], state["lm_head.weight"])


def test_a_checkpoint_without_averages_restarts_them_with_a_warning(tiny_policy_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from rlhfctl.distributed.engine_factory import build_engine
    from rlhfctl.ppo.ema import PolicyEMA

    engine = build_engine(AutoModelForCausalLM.from_pretrained(tiny_policy_dir), kind="torch", learning_rate=1e-2,
                          total_steps=2, train_batch_size=1, micro_train_batch_size=1)
    ema = PolicyEMA(engine, beta=0.5, keep=True)
    with pytest.warns(UserWarning, match="holds no averaged weights"):
        ema.load(str(tmp_path))


# ------------------------------------------------------------------------------------------------ ptx batches
def _texts(tmp_path: Path, n: int = 6) -> Path:
    return write_jsonl(tmp_path / "pretrain.jsonl", [{"text": f"row {i} " + "word " * i} for i in range(n)])


def test_each_step_draws_its_own_rows_again_on_resume_and_each_rank_its_share(tiny_policy_dir, tmp_path):
    from rlhfctl.models.actor import load_tokenizer
    from rlhfctl.ppo.ptx import PretrainBatches

    tokenizer = load_tokenizer(str(tiny_policy_dir))
    ptx = PtxArgs(pretrain_data=str(_texts(tmp_path)), pretrain_input_key="text")

    def batches(step: int, rank: int = 0, world: int = 1, n: int = 4) -> list[list[list[int]]]:
        source = PretrainBatches(ptx, tokenizer, max_len=5, rows_per_batch=2, seed=3, rank=rank, world_size=world)
        source.begin(step)
        return [source.next_batch()[0].tolist() for _ in range(n)]

    assert batches(4) == batches(4)  # a resumed run draws step 4's rows as the first run did
    assert batches(4) != batches(5)
    first = batches(4, n=3)
    assert all(len(row) <= 5 for batch in first for row in batch)  # cut to --prompt-max-len + --generate-max-len
    source = PretrainBatches(ptx, tokenizer, max_len=5, rows_per_batch=6, seed=3, rank=0, world_size=1)
    ids, mask = source.next_batch()
    texts = [f"row {i} " + "word " * i for i in range(6)]
    for row, real in zip(ids.tolist(), mask.tolist()):  # each row: a text's first tokens, padding after them
        kept = row[:sum(real)]
        assert real == sorted(real, reverse=True) and any(
            tokenizer(t, add_special_tokens=False)["input_ids"][:5] == kept for t in texts)
    assert len({tuple(row) for batch in first for row in batch}) == 6  # one pass: every row once before repeats
    rank0, rank1 = batches(4, 0, 2, 3), batches(4, 1, 2, 3)
    assert not {tuple(r) for b in rank0 for r in b} & {tuple(r) for b in rank1 for r in b}


def test_pretrain_data_without_its_text_column_exits_2_before_ray(tiny_policy_dir, prompt_file, tmp_path, capsys):
    data = _texts(tmp_path)
    code, _, err = run_cli(["train-ppo", "--pretrain", str(tiny_policy_dir), "--prompt-data", str(prompt_file),
                            "--remote-rm-url", "http://127.0.0.1:9", "--rollout-batch-size", "2", "--train-batch-size",
                            "2", "--micro-train-batch-size", "1", "--pretrain-data", str(data)], capsys)
    assert code == 2
    assert f"{data}: no column 'input' (--pretrain-input-key); the columns are: text" in err


# ------------------------------------------------------------------------------------------------ options
def _printed(args: list[str], capsys) -> dict:
    code, out, err = run_cli([*TRAIN, *args, "--print-config"], capsys)
    assert code == 0, err
    return yaml.safe_load(out)


@pytest.mark.parametrize("args", [
    # v0.8.9 and v0.10: flat names
    ["--enable_ema", "--ema_beta", "0.99", "--ptx_coef", "0.1", "--pretrain_data", "pt.jsonl", "--pretrain_split",
     "validation", "--max_samples", "100"],
    # v0.11: dotted names for EMA (v0.11's parser has no ptx options)
    ["--train.enable_ema", "--train.ema_beta", "0.99", "--ptx-coef", "0.1", "--pretrain-data", "pt.jsonl",
     "--pretrain-split", "validation"],
], ids=["flat", "dotted"])
def test_openrlhfs_ema_and_ptx_lines_run_as_written(args, capsys):
    cfg = _printed(args, capsys)
    assert (cfg["enable_ema"], cfg["ema_beta"], cfg["ptx_coef"], cfg["pretrain_data"], cfg["pretrain_split"]) == \
        (True, 0.99, 0.1, "pt.jsonl", "validation")


def test_openrlhfs_default_ptx_coef_alone_warns_that_it_adds_nothing(capsys):
    code, _, err = run_cli([*TRAIN, "--ptx_coef", "0.05", "--print-config"], capsys)
    assert code == 0 and "--ptx-coef: weighs the language-model loss on --pretrain-data, which is not given" in err


@pytest.mark.parametrize("args, message", [
    (["--ptx_coef", "0.1"], "--ptx-coef has no effect without --pretrain-data"),
    (["--pretrain-max-samples", "5"], "--pretrain-max-samples has no effect without --pretrain-data"),
    (["--pretrain-data", "pt.jsonl", "--ptx-coef", "0"], "--pretrain-data with --ptx-coef 0 adds nothing"),
    (["--train.ema_beta", "0.9"], "--ema-beta has no effect without --enable-ema"),
    (["--enable-ema", "--ema-beta", "1"], "--ema-beta"),
])
def test_ema_and_ptx_options_that_would_do_nothing_exit_2(args, message, capsys):
    code, out, err = run_cli([*TRAIN, *args, "--print-config"], capsys)
    assert code == 2 and message in " ".join(err.split()) and "Traceback" not in out + err
