"""--use-dynamic-batch: micro-batches by a token budget. An update's gradient is the one of its whole batch at once,
however the samples were grouped (fp32: within 1e-5); rollout forwards keep row order; bad budgets exit 2."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfctl.config import TrainPPOConfig
from rlhfctl.ppo.micro_batching import rollout_groups, token_budget_groups
from tests.helpers import ROOT, run_cli
from tests.unit.test_packing import ACTIONS, _experience

TRAIN = ["train-ppo", "--pretrain", "p", "--prompt-data", "d", "--remote-rm-url", "http://127.0.0.1:1/get_reward"]


# ------------------------------------------------------------------------------------------------ grouping
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_groups_cover_every_row_once_within_the_budget(packed):
    prompt = [5, 1, 9, 3, 2, 7, 4, 8]
    response = [2, 10, 1, 6, 3, 0, 12, 4]
    groups = token_budget_groups(prompt, response, budget=24, packed=packed)
    assert sorted(i for g in groups for i in g) == list(range(8))
    for g in groups:
        real = sum(prompt[i] + response[i] for i in g)
        padded = len(g) * (max(prompt[i] for i in g) + max(response[i] for i in g))
        assert (real if packed else padded) <= 24
    assert len(groups) < 8  # short rows share a micro-batch


def test_a_sample_longer_than_the_budget_runs_alone_with_a_warning(caplog):
    groups = token_budget_groups([30, 2, 3], [10, 2, 3], budget=16, packed=True)
    assert [0] in groups and sorted(i for g in groups for i in g) == [0, 1, 2]
    assert "longer than the token budget" in caplog.text


def test_rollout_groups_without_a_budget_are_fixed_counts_in_order():
    mask = torch.ones(5, 6, dtype=torch.long)
    assert rollout_groups(mask, 3, size=2, budget=None, packed=False) == [[0, 1], [2, 3], [4]]


# ------------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize("flag", ["--train-max-tokens-per-gpu", "--rollout-max-tokens-per-gpu"])
@pytest.mark.parametrize("value", ["0", "-5"])
def test_non_positive_token_budgets_exit_2_naming_the_flag(flag, value, capsys):
    code, out, err = run_cli([*TRAIN, "--use-dynamic-batch", flag, value, "--print-config"], capsys)
    assert code == 2 and flag in err and "Traceback" not in out + err


def test_a_budget_without_dynamic_batch_says_it_does_nothing(capsys):
    code, _, err = run_cli([*TRAIN, "--train-max-tokens-per-gpu", "4096", "--print-config"], capsys)
    assert code == 0 and "--train-max-tokens-per-gpu: a token budget acts with --use-dynamic-batch only" in err


def test_openrlhf_spellings_set_the_fields(capsys):
    import yaml

    code, out, err = run_cli([*TRAIN, "--train.dynamic_batch_enable", "--train.max_tokens_per_gpu", "4096",
                               "--rollout_max_tokens_per_gpu", "8192", "--ds.packing_samples", "--print-config"],
                              capsys)
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert (cfg["use_dynamic_batch"], cfg["train_max_tokens_per_gpu"], cfg["rollout_max_tokens_per_gpu"],
            cfg["packing_samples"]) == (True, 4096, 8192, True)
    assert "Warning" not in err


# ------------------------------------------------------------------------------------------------ training
def _train_once(tiny_policy_dir, worker: str, **options) -> tuple[float, dict[str, torch.Tensor], int]:
    """One update of a worker (torch engine, no Ray) over 12 rows of mixed lengths: (grad norm, weights, updates)."""
    from rlhfctl.config import slices
    from rlhfctl.ppo import workers

    cfg = TrainPPOConfig(pretrain=str(tiny_policy_dir), prompt_data="p.jsonl", remote_rm_url="r.py", engine="torch",
                         train_batch_size=12, lr_warmup_ratio=0.0, use_kl_loss=True, entropy_loss_coef=0.01,
                         **options)
    torch.manual_seed(0)  # the critic's fresh value head: the same in every run
    groups = {"PolicyWorker": slices.PolicyGroups, "CriticWorker": slices.CriticGroups}[worker]
    w = getattr(workers, worker)(groups.of(cfg), total_updates=1)
    exp = _experience(3)
    exp = type(exp).concat([exp, _experience(4)])
    metrics = w.train(exp, step=0)
    return metrics["grad_norm"], {k: v.clone() for k, v in w.engine.unwrapped.state_dict().items()}, \
        w.engine.global_step


@pytest.mark.parametrize("worker, loss_agg", [("PolicyWorker", "token-mean"), ("PolicyWorker", "seq-mean-token-mean"),
                                               ("PolicyWorker", "seq-mean-token-sum-norm"),
                                               ("CriticWorker", None)])
def test_an_update_does_not_depend_on_how_its_samples_were_grouped(worker, loss_agg, tiny_policy_dir):
    """Reference: the whole optimiser step in one micro-batch. Token budgets that make 2 to 12 micro-batches of
    unequal sizes, padded or packed, give the same gradient and the same weights after the update."""
    agg = {"loss_agg_mode": loss_agg} if loss_agg else {}
    ref_norm, ref_weights, _ = _train_once(tiny_policy_dir, worker, micro_train_batch_size=12, **agg)
    for budget, packed in ((40, False), (64, True), (1, True)):
        norm, weights, updates = _train_once(tiny_policy_dir, worker, micro_train_batch_size=1, use_dynamic_batch=True,
                                             train_max_tokens_per_gpu=budget, packing_samples=packed, **agg)
        assert updates == 1  # one optimiser step, whatever the number of micro-batches
        assert math.isclose(norm, ref_norm, rel_tol=1e-5), (budget, packed, norm, ref_norm)
        assert all(torch.allclose(weights[k], ref_weights[k], atol=1e-6) for k in ref_weights), (budget, packed)
    # the fixed-count path averages micro-batch means (OpenRLHF's), which does depend on the grouping here
    fixed_norm, _, _ = _train_once(tiny_policy_dir, worker, micro_train_batch_size=4, **agg)
    assert not math.isclose(fixed_norm, ref_norm, rel_tol=1e-4)


def test_rollout_log_probs_and_values_keep_row_order_under_a_budget(tiny_policy_dir):
    from rlhfctl.config.slices import CriticGroups, PolicyGroups
    from rlhfctl.ppo.workers import CriticWorker, PolicyWorker

    exp = _experience(5)
    common = dict(pretrain=str(tiny_policy_dir), prompt_data="p.jsonl", remote_rm_url="r.py", engine="torch",
                  micro_train_batch_size=6, train_batch_size=6)
    real = exp.action_mask.bool()
    for cls, groups, method in ((PolicyWorker, PolicyGroups, "log_probs"), (CriticWorker, CriticGroups, "values")):
        outs = []
        for extra in ({}, {"use_dynamic_batch": True, "rollout_max_tokens_per_gpu": 30},
                      {"use_dynamic_batch": True, "rollout_max_tokens_per_gpu": 30, "packing_samples": True}):
            torch.manual_seed(0)
            worker = cls(groups.of(TrainPPOConfig(**common, **extra)), total_updates=1)
            outs.append(getattr(worker, method)(exp.sequences, exp.attention_mask, ACTIONS))
        for out in outs[1:]:
            assert out.shape == outs[0].shape
            assert torch.allclose(out[real], outs[0][real], atol=1e-5), (cls.__name__, out - outs[0])


@pytest.mark.parametrize("args", [["--min-len", "64", "--max-len", "32"], ["--max-tokens", "0"], ["--modes", "fast"]])
def test_the_packing_benchmark_refuses_bad_options(args):
    import subprocess
    import sys

    script = ROOT / "benchmarks" / "packing.py"
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "error:" in done.stderr and "Traceback" not in done.stderr
