"""train-ppo end to end: the real CLI in a subprocess, real Ray, DeepSpeed and serve-rm, tiny models, 1-20 steps.

A run of one worker per role runs them in its own process, as a user's run on a machine without GPUs does; a run
of several workers joins the session's Ray cluster (tests/conftest.py), which saves a cluster start.
"""

from __future__ import annotations

import time

import pytest

from tests.helpers.ray_cluster import SESSION_CPUS
from tests.helpers.train_ppo import assert_loads_as_causal_lm, assert_reward_rises, base_args, metrics, train


pytestmark = pytest.mark.slow


def test_learns_from_a_reward_func_with_labels(tiny_policy_dir, prompt_file, reward_file, tmp_path):
    """group_norm, torch engine, no KL term (so no critic or reference worker: the actor alone learns), run as a user
    runs it on a machine without GPUs: the actor in the driver's process, no Ray. The reward goes up over 21 steps.
    (The KL against a reference is measured and logged in test_train_ppo_resume.py, which also compares a run's
    Ray workers with the driver.)"""
    from rlhfctl.distributed.in_driver import driver_threads

    out = tmp_path / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, str(reward_file), ray_address=None)
    args += ["--max-samples", "6", "--num-episodes", "7", "--advantage-estimator", "group_norm", "--engine", "torch",
             "--actor-learning-rate", "5e-3", "--lr-warmup-ratio", "0", "--generate-max-len", "16", "--seed", "7",
             "--init-kl-coef", "0"]
    result = train(args)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = assert_reward_rises(out, 21)
    assert all(m["reward/label_seen"] == 1.0 for m in steps)  # the labels reached the reward_func
    for key in ("kl", "policy_loss", "time/generate", "time/reward", "time/make_experience", "time/train",
                "samples_per_s", "actor_grad_norm"):
        assert key in steps[-1]
    assert steps[-1]["actor_torch_threads"] == driver_threads()  # the roles take turns on every core
    assert "placement: actor in the driver's process" in result.stderr
    assert "no GPUs in the Ray cluster" not in result.stderr
    assert_loads_as_causal_lm(out)
    # --save-steps -1 (the default): the policy is saved, but no resumable checkpoint unless asked for
    assert not (out / "ckpt").exists() and "checkpoint of step" not in result.stderr


@pytest.fixture(scope="module")
def two_actor_workers_combined_reward(tiny_policy_dir, prompt_file, reward_file, tmp_path_factory, ray_address):
    """One run for two tests (its start is most of its cost): two data-parallel actor workers under ZeRO-2 (ZeRO-3
    with two actor workers: the seed command test), trained on --reward's weighted sum of a reward_func.py and a
    custom-code reward model. group_norm and --init-kl-coef 0: no critic, no reference. Returns the run's result and
    its output folder."""
    from rlhfctl.models.tiny_kinds import make_count_model

    tmp = tmp_path_factory.mktemp("two_actor_workers")
    rm = make_count_model(tmp / "rm", count_char="e")
    out = tmp / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, str(reward_file), ray_address)
    at = args.index("--remote-rm-url")
    args[at:at + 2] = ["--reward", f"acc={reward_file}:1.0", "--reward", f"rm={rm}:0.5", "--trust-remote-code",
                       "--reward-cache-size", "64"]
    args += ["--advantage-estimator", "group_norm", "--actor-num-gpus-per-node", "2", "--zero-stage", "2",
             "--actor-learning-rate", "1e-3", "--init-kl-coef", "0"]
    return train(args), out


def test_two_data_parallel_actor_workers(two_actor_workers_combined_reward, tiny_policy_dir):
    import torch
    from transformers import AutoModelForCausalLM

    result, out = two_actor_workers_combined_reward
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(metrics(out)) == 2 and "value_loss" not in metrics(out)[-1]  # no critic without gae
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    initial = AutoModelForCausalLM.from_pretrained(tiny_policy_dir).state_dict()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)


def test_ring_attention_splits_each_packed_row_over_a_ring_of_workers(tiny_policy_dir, prompt_file, reward_file,
                                                                      tmp_path, ray_address):
    """--ring-attn-size 2 as OpenRLHF's long-context scripts use it: 2 actor workers in one ring, ZeRO-3,
    --packing-samples, a reference of one worker. At step 1 the actor's log-probs, each packed row split over the
    ring, equal the reference's, which runs the rows whole (same weights: kl 0); both steps train. The split's
    outputs and gradients, the critic's too: tests/unit/test_ring_attention.py; rows of several rings:
    tests/unit/test_train_ppo_parts.py (4 workers, 2 rings, ran by hand with OpenRLHF's launch lines)."""
    out = tmp_path / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, str(reward_file), ray_address)
    args += ["--actor-num-gpus-per-node", "2", "--advantage-estimator", "group_norm",
             "--zero-stage", "3", "--packing-samples", "--ring-attn-size", "2", "--ring-head-stride", "2"]
    result = train(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("ring attention: actor 2 workers = 1 ring(s) of 2 (data-parallel 1), ref 1 worker(s), rows whole; 2 "
            "key/value head(s) per exchange") in " ".join(result.stderr.split())
    steps = metrics(out)
    assert len(steps) == 2
    assert abs(steps[0]["kl"]) < 1e-6 and steps[1]["kl"] != 0  # the ring's forward is the whole row's; then trained
    assert all(m["actor_grad_norm"] > 0 for m in steps)


def test_an_unsatisfiable_placement_fails_in_time_naming_ask_and_cluster(tiny_policy_dir, prompt_file, reward_file,
                                                                        tmp_path, ray_address):
    out = tmp_path / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, str(reward_file), ray_address) + [
        "--critic-num-gpus-per-node", "32", "--placement-timeout", "3", "--train-batch-size", "128"]  # 4 x 32
    start = time.time()
    result = train(args)
    assert result.returncode == 1
    assert time.time() - start < 60
    text = " ".join(result.stderr.split())
    assert "within 3s" in text and "critic 32" in text and f"{SESSION_CPUS} CPU" in text


def test_a_local_llm_judge_is_the_reward(tiny_policy_dir, prompt_file, tmp_path):
    """--judge-model scores in the driver; generate mode's unparsed count reaches the metrics."""
    out = tmp_path / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, "unused", None)
    del args[args.index("--remote-rm-url"):args.index("--remote-rm-url") + 2]
    args += ["--judge-model", str(tiny_policy_dir), "--judge-mode", "generate", "--judge-max-new-tokens", "2",
             "--judge-fallback-reward", "-1", "--max-samples", "2", "--engine", "torch", "--advantage-estimator",
             "group_norm", "--init-kl-coef", "0"]
    result = train(args)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = metrics(out)
    assert len(steps) == 1 and steps[0]["reward"] >= -1
    unparsed = [v for k, v in steps[0].items() if k.endswith("judge_unparsed")]
    assert unparsed and 0 <= unparsed[0] <= 1  # every answer scored: a number it wrote, or the fallback, counted


def test_combined_cached_reward(two_actor_workers_combined_reward):
    """--reward: a reward_func.py plus a custom-code reward model (issue 15): the total is their weighted sum, each
    is logged as reward/NAME, the cache's hit rate as reward/cache_hit_rate, the model's code announced once."""
    result, out = two_actor_workers_combined_reward
    assert result.returncode == 0, result.stderr[-3000:]
    steps = metrics(out)  # two steps of 2 prompts x 4 samples
    assert len(steps) == 2
    for m in steps:
        assert m["reward"] == pytest.approx(m["reward/acc"] + 0.5 * m["reward/rm"], abs=1e-5)
        assert m["reward/acc/label_seen"] == 1.0 and 0.0 <= m["reward/cache_hit_rate"] <= 1.0
    assert result.stderr.count("--trust-remote-code: running the Python code in") == 1
