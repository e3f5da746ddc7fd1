"""The training engine: torch and DeepSpeed (ZeRO 0-3, real DeepSpeed on CPU over gloo) give the same updates,
checkpoints resume exactly, ZeRO-3 weights can be gathered for saving and generate(), and two data-parallel
workers end a step with identical weights."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from rlhfctl.distributed import engine as engine_mod
from rlhfctl.distributed.engine import EngineError, lr_at
from rlhfctl.distributed.engine_factory import build_engine
from rlhfctl.net import free_port
from rlhfctl.errors import ConfigError
from tests.helpers.dist import own_process_group  # noqa: F401 - autouse fixture

TOL = 1e-5  # fp32: torch and DeepSpeed differ only in summation order
# Partition every parameter under ZeRO-3 (DeepSpeed keeps tensors under 1e5 elements whole by default, which would
# be all of a tiny model) so the gathering paths are really exercised.
Z3_ALL = {"zero_optimization": {"stage3_param_persistence_threshold": 0}}
ENGINES = [("torch", 0), ("deepspeed", 0), ("deepspeed", 1), ("deepspeed", 2), ("deepspeed", 3)]
IDS = ["torch", "ds-z0", "ds-z1", "ds-z2", "ds-z3"]


def _model(folder: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder)


def _engine(folder: Path, kind: str, stage: int, **kw: Any) -> engine_mod.TrainingEngine:
    args: dict[str, Any] = dict(learning_rate=1e-3, total_steps=10, warmup_ratio=0.2, max_norm=1.0)
    args.update(kw)
    return build_engine(_model(folder), kind=kind, zero_stage=stage, ds_config_overrides=Z3_ALL, **args)


def _batches(n: int, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(10, 500, (2, 12), generator=g) for _ in range(n)]


def _train(eng: engine_mod.TrainingEngine, batches: list[torch.Tensor]) -> tuple[list[float], list[dict]]:
    losses, stats = [], []
    for ids in batches:
        loss = eng.module(input_ids=ids, labels=ids).loss
        eng.backward(loss)
        losses.append(loss.item())
        stats.append(eng.step())
    return losses, [s for s in stats if s["stepped"]]


def _assert_state_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= atol, f"largest parameter difference {worst:.3g} > {atol}"


# ----------------------------------------------------------------------------------------------- fast
def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    total, ratio = 10, 0.25  # ceil(2.5) = 3 warm-up steps
    lrs = [lr_at(s, total_steps=total, warmup_ratio=ratio) for s in range(12)]
    assert lrs[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert lrs[3] == pytest.approx(1.0)  # cosine starts at the top
    assert all(x > y for x, y in zip(lrs[3:10], lrs[4:11]))
    assert lrs[10] == pytest.approx(0.1) and lrs[11] == pytest.approx(0.1)
    assert lr_at(0, total_steps=5, warmup_ratio=0.0) == 1.0  # no warm-up: the first step uses the full rate


def test_lr_scheduler_choices():
    # total 10, 2 warm-up steps (ratio 0.2): [0.5, 1.0], then progress p = (s - 2) / 8
    def lrs(name):
        return [lr_at(s, total_steps=10, warmup_ratio=0.2, scheduler=name) for s in (0, 1, 2, 6, 10)]

    # p = 0, 0.5, 1 at steps 2, 6, 10
    assert lrs("linear") == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0])
    assert lrs("cosine") == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0])  # 0.5 * (1 + cos(pi / 2)) = 0.5 at p = 0.5
    assert lrs("cosine_with_min_lr") == pytest.approx([0.5, 1.0, 1.0, 0.55, 0.1])  # 0.1 + 0.9 * 0.5
    assert lrs("constant_with_warmup") == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0])
    assert lrs("constant") == pytest.approx([1.0] * 5)  # transformers' constant has no warm-up
    with pytest.raises(ConfigError, match="--lr-scheduler must be one of"):
        lr_at(0, total_steps=10, warmup_ratio=0.2, scheduler="step")


@pytest.mark.parametrize(
    "env, match",
    [
        ({"MASTER_ADDR": "127.0.0.1", "RANK": "0"}, "MASTER_PORT, WORLD_SIZE missing"),
        ({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1", "RANK": "2", "WORLD_SIZE": "2"}, "0 <= RANK < WORLD_SIZE"),
        ({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1", "RANK": "x", "WORLD_SIZE": "2"}, "must be integers"),
    ],
)
def test_init_distributed_names_what_is_wrong_with_the_environment(monkeypatch, env, match):
    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(EngineError, match=match):
        engine_mod.init_distributed()
    assert not dist.is_initialized()
    assert 0 < free_port() < 65536


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(train_batch_size=3, micro_train_batch_size=2), "multiple of --micro-train-batch-size"),
        (dict(zero_stage=4), "zero-stage"),
        (dict(total_steps=0), "total_steps"),
        (dict(warmup_ratio=1.0), "warmup"),
        (dict(kind="jax"), "engine must be"),
    ],
)
def test_bad_arguments_are_config_errors(tiny_policy_dir, kw, match):
    args: dict[str, Any] = dict(kind="torch", learning_rate=1e-3, total_steps=4)
    args.update(kw)
    with pytest.raises(ConfigError, match=match):
        build_engine(_model(tiny_policy_dir), **args)


def test_torch_engine_accumulates_then_steps(tiny_policy_dir):
    eng = _engine(tiny_policy_dir, "torch", 0, train_batch_size=3, warmup_ratio=0.0)
    assert eng.gradient_accumulation_steps == 3 and eng.world_size == 1
    before = {k: v.clone() for k, v in eng.unwrapped.state_dict().items()}
    _, stats = _train(eng, _batches(2))
    assert stats == [] and eng.global_step == 0
    _assert_state_close(before, eng.unwrapped.state_dict(), 0.0)  # no update before the boundary
    _, stats = _train(eng, _batches(1))
    assert len(stats) == 1 and stats[0]["lr"] == pytest.approx(1e-3) and math.isfinite(stats[0]["grad_norm"])
    assert eng.global_step == 1 and eng.micro_step == 0
    with pytest.raises(RuntimeError, match="without backward"):
        eng.step()


# ----------------------------------------------------------------------------------------------- DeepSpeed
@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_deepspeed_matches_torch(tiny_policy_dir, stage):
    """Same model, batches and schedule, 3 updates of 2 accumulated micro-batches each: same losses, norms, weights."""
    batches = _batches(6)
    ref = _engine(tiny_policy_dir, "torch", 0, train_batch_size=2, weight_decay=0.1)
    ref_losses, ref_stats = _train(ref, batches)
    eng = _engine(tiny_policy_dir, "deepspeed", stage, train_batch_size=2, weight_decay=0.1)
    losses, stats = _train(eng, batches)
    assert losses == pytest.approx(ref_losses, abs=TOL)
    assert [s["lr"] for s in stats] == pytest.approx([s["lr"] for s in ref_stats], rel=1e-9)
    assert [s["grad_norm"] for s in stats] == pytest.approx([s["grad_norm"] for s in ref_stats], rel=1e-5)
    assert ref_stats[0]["grad_norm"] > 1.0  # clipping was active, so it is compared too
    _assert_state_close(eng.state_dict_for_save(), ref.state_dict_for_save(), TOL)


@pytest.mark.slow
@pytest.mark.parametrize("kind, stage", ENGINES, ids=IDS)
def test_loss_decreases_on_a_fixed_batch(tiny_policy_dir, kind, stage):
    eng = _engine(tiny_policy_dir, kind, stage, warmup_ratio=0.0)
    losses, stats = _train(eng, _batches(1) * 6)
    assert losses[-1] < losses[0] - 0.05, losses
    assert len(stats) == 6 and all(math.isfinite(s["grad_norm"]) for s in stats)


@pytest.mark.slow
@pytest.mark.parametrize("kind, stage", [("torch", 0), ("deepspeed", 0), ("deepspeed", 2), ("deepspeed", 3)],
                         ids=["torch", "ds-z0", "ds-z2", "ds-z3"])
def test_checkpoint_resumes_exactly(tiny_policy_dir, tmp_path, kind, stage):
    """Save after 2 updates; a fresh engine loading it takes the same 3rd update as the run that went on."""
    batches = _batches(3)
    run = _engine(tiny_policy_dir, kind, stage)
    _train(run, batches[:2])
    run.save_checkpoint(str(tmp_path / "ckpt"))
    assert (tmp_path / "ckpt" / "latest").read_text().strip() == "global_step2"
    want_losses, want_stats = _train(run, batches[2:])
    want = run.state_dict_for_save()

    resumed = _engine(tiny_policy_dir, kind, stage)
    resumed.load_checkpoint(str(tmp_path / "ckpt"))
    assert resumed.global_step == 2
    losses, stats = _train(resumed, batches[2:])
    assert losses == want_losses
    assert stats == want_stats  # same lr (schedule position restored) and grad norm
    _assert_state_close(resumed.state_dict_for_save(), want, 0.0)  # Adam moments restored too


@pytest.mark.slow
def test_checkpoint_of_another_engine_is_refused(tiny_policy_dir, tmp_path):
    eng = _engine(tiny_policy_dir, "torch", 0)
    _train(eng, _batches(1))
    eng.save_checkpoint(str(tmp_path))
    with pytest.raises(EngineError, match="written by the torch engine"):
        _engine(tiny_policy_dir, "deepspeed", 2).load_checkpoint(str(tmp_path))
    with pytest.raises(EngineError, match="no checkpoint"):
        eng.load_checkpoint(str(tmp_path / "nothing-here"))


@pytest.mark.slow
@pytest.mark.parametrize("kind, stage", [("torch", 0), ("deepspeed", 3)], ids=["torch", "ds-z3"])
def test_state_dict_for_save_loads_into_a_fresh_model(tiny_policy_dir, tmp_path, kind, stage):
    from transformers import AutoModelForCausalLM

    eng = _engine(tiny_policy_dir, kind, stage)
    _train(eng, _batches(2))
    state = eng.state_dict_for_save()
    assert state.keys() == _model(tiny_policy_dir).state_dict().keys()
    eng.unwrapped.save_pretrained(tmp_path, state_dict=state)
    fresh = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    _assert_state_close(fresh.state_dict(), state, 0.0)
    ids = _batches(1, seed=7)[0]
    eng.module.eval()
    with torch.no_grad(), eng.gathered_params():
        expected = eng.module(input_ids=ids).logits
    torch.testing.assert_close(fresh(input_ids=ids).logits, expected, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_zero3_gathered_params_lets_generate_run(tiny_policy_dir):
    eng = _engine(tiny_policy_dir, "deepspeed", 3)
    _train(eng, _batches(1))
    state = eng.state_dict_for_save()
    weight = eng.unwrapped.lm_head.weight
    assert weight.numel() == 0  # really partitioned outside the context
    prompt = _batches(1, seed=3)[0][:1, :5]
    eng.module.eval()
    with torch.no_grad(), eng.gathered_params():
        assert tuple(weight.shape) == tuple(weight.ds_shape)
        out = eng.module.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                                     do_sample=False, pad_token_id=0)
    assert weight.numel() == 0
    plain = _model(tiny_policy_dir).eval()
    plain.load_state_dict(state)
    expected = plain.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False,
                              pad_token_id=0)
    assert out.shape == (1, 11) and torch.equal(out, expected)


@pytest.mark.slow
@pytest.mark.parametrize("kind, stage", [("torch", 0), ("deepspeed", 3)], ids=["torch", "ds-z3"])
def test_gradient_checkpointing_recomputes_and_gives_the_same_updates(tiny_policy_dir, kind, stage):
    batches = _batches(2)
    results = {}
    for checkpointing in (False, True):
        eng = _engine(tiny_policy_dir, kind, stage, gradient_checkpointing=checkpointing)
        calls, mlp = [], eng.unwrapped.model.layers[0].mlp
        forward = mlp.forward  # counted by wrapping forward: the recomputation runs no module hooks
        mlp.forward = lambda *a, **k: (calls.append(1), forward(*a, **k))[1]
        losses, _ = _train(eng, batches)
        results[checkpointing] = losses, eng.state_dict_for_save(), len(calls)
    assert results[False][2] == 2 and results[True][2] == 4  # the layer ran again in each backward
    assert results[True][0] == pytest.approx(results[False][0], abs=TOL)
    _assert_state_close(results[True][1], results[False][1], TOL)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 2])
def test_bf16_torch_matches_deepspeed(tiny_policy_dir, stage):
    """bf16 compute with fp32 master weights in both; equal up to bf16 rounding of the weights. (ZeRO-0 is the
    stage where DeepSpeed's bf16 wrapper takes a dummy step at init, which the engine must neutralise.)"""
    batches = _batches(3)
    ref = _engine(tiny_policy_dir, "torch", 0, bf16=True, weight_decay=0.1)
    ref_losses, _ = _train(ref, batches)
    eng = _engine(tiny_policy_dir, "deepspeed", stage, bf16=True, weight_decay=0.1)
    losses, _ = _train(eng, batches)
    assert next(eng.unwrapped.parameters()).dtype == torch.bfloat16
    assert losses == pytest.approx(ref_losses, abs=1e-3)
    _assert_state_close(eng.state_dict_for_save(), ref.state_dict_for_save(), 2e-3)


@pytest.mark.slow
def test_adam_offload_without_gpu_warns_once_and_trains(tiny_policy_dir, caplog, monkeypatch):
    monkeypatch.setattr(engine_mod, "_warned", set())
    with caplog.at_level(logging.WARNING, logger=engine_mod.__name__):
        eng = _engine(tiny_policy_dir, "deepspeed", 2, adam_offload=True, warmup_ratio=0.0)
        _engine(tiny_policy_dir, "deepspeed", 2, adam_offload=True)
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "no effect without a GPU" in caplog.text
    assert type(eng._ds.basic_optimizer) is torch.optim.AdamW
    losses, _ = _train(eng, _batches(1) * 3)
    assert losses[-1] < losses[0]


# ----------------------------------------------------------------------------------------------- two workers
def _worker(rank: int, port: int, folder: str, out_dir: str) -> None:
    """One data-parallel rank. Per variant: 2 updates on this rank's own micro-batches (weights saved for the
    parent to compare), then a checkpoint, a 3rd update, and a fresh engine that resumes and must match it."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK="0")
    engine_mod.init_distributed("gloo", timeout_s=120)
    batches = [b[rank:rank + 1] for b in _batches(3)]  # micro-batch of 1: rank r takes row r of each batch
    out = Path(out_dir)

    def build(kind: str, stage: int) -> engine_mod.TrainingEngine:
        model = _model(Path(folder))
        if rank == 1:  # every engine must start all ranks from rank 0's weights
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01)
        return build_engine(model, kind=kind, zero_stage=stage, learning_rate=1e-3, total_steps=10,
                            warmup_ratio=0.2, micro_train_batch_size=1, train_batch_size=2,
                            ds_config_overrides=Z3_ALL)

    def weights(eng: engine_mod.TrainingEngine) -> dict[str, torch.Tensor]:
        with torch.no_grad(), eng.gathered_params():
            return {n: p.detach().clone() for n, p in eng.unwrapped.named_parameters()}

    for kind, stage in [("torch", 0), ("deepspeed", 2), ("deepspeed", 3)]:
        eng = build(kind, stage)
        assert eng.world_size == 2 and eng.rank == rank and eng.gradient_accumulation_steps == 1
        _, stats = _train(eng, batches[:2])
        with torch.no_grad(), eng.gathered_params():  # ranks generate different lengths: no collective may run
            prompt = batches[0][:, :4]
            sampled = eng.module.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                          max_new_tokens=2 + 4 * rank, min_new_tokens=2 + 4 * rank, pad_token_id=0)
            assert sampled.shape[1] == 6 + 4 * rank
        torch.save({"weights": weights(eng), "stats": stats, "state": eng.state_dict_for_save()},
                   out / f"{kind}{stage}-rank{rank}.pt")
        eng.save_checkpoint(str(out / f"ckpt-{kind}{stage}"))
        _train(eng, batches[2:])
        resumed = build(kind, stage)
        resumed.load_checkpoint(str(out / f"ckpt-{kind}{stage}"))
        _train(resumed, batches[2:])
        want, got = weights(eng), weights(resumed)
        assert all(torch.equal(want[n], got[n]) for n in want), f"{kind}{stage}: resumed run differs"
    # Both ranks leave together: a rank that tears gloo down while the other still talks to it aborts at exit.
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_workers_end_each_step_with_identical_weights(tiny_policy_dir, tmp_path):
    """torch, ZeRO-2 and ZeRO-3 over 2 gloo processes, rank 1 starting from other weights: both ranks end each
    update with rank 0's start plus the data-parallel mean gradient's update, i.e. what one process accumulating
    both ranks' micro-batches computes; and each resumes from its checkpoint exactly."""
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(free_port(), str(tiny_policy_dir), str(tmp_path)), nprocs=2, join=True)
    ref = _engine(tiny_policy_dir, "torch", 0, micro_train_batch_size=1, train_batch_size=2)
    _, ref_stats = _train(ref, [row for b in _batches(2) for row in (b[0:1], b[1:2])])
    want = ref.state_dict_for_save()
    for variant in ("torch0", "deepspeed2", "deepspeed3"):
        r0, r1 = (torch.load(tmp_path / f"{variant}-rank{r}.pt", weights_only=True) for r in (0, 1))
        for name in r0["weights"]:
            assert torch.equal(r0["weights"][name], r1["weights"][name]), f"{variant}: ranks differ at {name}"
        assert r1["state"] == {}  # the full state dict is rank 0's alone
        _assert_state_close(r0["state"], want, TOL)
        assert [s["grad_norm"] for s in r0["stats"]] == pytest.approx([s["grad_norm"] for s in ref_stats], rel=1e-5)


# ----------------------------------------------------------------------------------------------- non-finite
@pytest.mark.slow
@pytest.mark.parametrize("kind, stage", ENGINES, ids=IDS)
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_a_nonfinite_gradient_is_never_applied(tiny_policy_dir, kind, stage, bf16):
    """An inf loss (NaN gradients) at an update: weights, schedule and step count stay as they were, the result
    says so, and the next finite update is an ordinary one. Unguarded, torch and ZeRO-0 fp32 wrote NaN weights."""
    eng = _engine(tiny_policy_dir, kind, stage, bf16=bf16, warmup_ratio=0.0)
    ids = _batches(1)[0]
    with torch.no_grad(), eng.gathered_params():
        before = {n: p.detach().clone() for n, p in eng.unwrapped.named_parameters()}
    lr = eng.lr
    eng.backward(eng.module(input_ids=ids, labels=ids).loss * float("inf"))
    result = eng.step()
    assert result["nonfinite"] and not result["stepped"] and not math.isfinite(result["grad_norm"])
    assert eng.global_step == 0 and eng.micro_step == 0 and eng.lr == lr
    with torch.no_grad(), eng.gathered_params():
        assert all(torch.equal(before[n], p) for n, p in eng.unwrapped.named_parameters())
    losses, stats = _train(eng, [ids])
    assert len(stats) == 1 and math.isfinite(stats[0]["grad_norm"]) and eng.global_step == 1
    with torch.no_grad(), eng.gathered_params():
        assert all(torch.isfinite(p).all() for p in eng.unwrapped.parameters())
        assert any(not torch.equal(before[n], p) for n, p in eng.unwrapped.named_parameters())
