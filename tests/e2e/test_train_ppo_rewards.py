"""train-ppo with DAPO/GSPO-era policy options, and with rewards that fail: a server that dies, a function that
raises or hangs. The real CLI in a subprocess, its roles in its own process (one worker each, no GPUs).
"""

from __future__ import annotations

import time

import pytest

from tests.helpers import start_server
from tests.helpers.train_ppo import base_args, metrics, start_training, train


pytestmark = pytest.mark.slow

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


def test_dapo_style_options_together(tiny_policy_dir, prompt_file, tmp_path):
    """dr_grpo with the KL as a k3 loss, entropy, clip-higher, CISPO, Dr.GRPO's loss normaliser, no std
    norm, dynamic filtering on the reward's scores, overlong and stop-properly penalties, IS correction (identity with
    HF generation) and a constant learning rate, in one real run."""
    reward = tmp_path / "reward_scores.py"
    reward.write_text(REWARD_WITH_SCORES)
    out = tmp_path / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, str(reward), None) + [
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


def test_gspo_with_a_critic_warmed_up_by_freezing_the_actor(tiny_policy_dir, prompt_file, reward_file, tmp_path):
    """--freezing-actor-steps 1: step 1 trains the critic alone, step 2 both (GSPO's sequence-level ratio, dual
    clip). No KL term: the reference is not what this is about, and its worker would only cost a process start."""
    out = tmp_path / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, str(reward_file), None) + [
        "--advantage-estimator", "gae", "--policy-loss-type", "gspo", "--dual-clip", "3", "--freezing-actor-steps", "1",
        "--engine", "torch", "--init-kl-coef", "0", "--actor-learning-rate", "1e-3", "--lr-scheduler", "linear",
        "--lr-warmup-ratio", "0"]
    result = train(args)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = metrics(out)
    assert first["actor_frozen"] == 1.0 and "policy_loss" not in first and "value_loss" in first
    assert "actor_frozen" not in second and "policy_loss" in second and "value_loss" in second


def test_a_reward_server_that_dies_stops_the_run_after_a_checkpoint(tiny_policy_dir, prompt_file, reward_file,
                                                                   tmp_path):
    server, url, _ = start_server("--reward-func", str(reward_file))
    out = tmp_path / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, url, None) + [
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


def test_a_reward_func_that_raises_stops_with_the_sample_and_traceback(tiny_policy_dir, prompt_file, tmp_path):
    reward = tmp_path / "bad_reward.py"
    reward.write_text(REWARD_THAT_RAISES)
    out = tmp_path / "out"
    args = base_args(tiny_policy_dir, prompt_file, out, str(reward), None) + [
        "--max-samples", "6", "--rollout-batch-size", "6", "--advantage-estimator", "group_norm", "--engine", "torch",
        "--init-kl-coef", "0"]
    result = train(args)
    assert result.returncode == 1
    assert "KeyError" in result.stderr and "no rule for" in result.stderr
    assert 'raise KeyError("no rule for " + label)' in result.stderr  # the user's own line
    assert "step 1:" in result.stderr
    assert metrics(out) == []


def test_a_hung_reward_func_stops_the_run_at_the_reward_timeout(tiny_policy_dir, prompt_file, tmp_path):
    reward = tmp_path / "hangs.py"
    reward.write_text(REWARD_THAT_HANGS)
    out = tmp_path / "out"
    # group_norm, no KL term: the hang is in the reward, so the critic and reference would only cost process starts
    result = train(base_args(tiny_policy_dir, prompt_file, out, str(reward), None)
                   + ["--engine", "torch", "--advantage-estimator", "group_norm", "--init-kl-coef", "0",
                      "--reward-timeout", "2"])
    assert result.returncode == 1
    assert "hangs.py:reward_func: took longer than the timeout of 2s on a batch of 8" in result.stderr
    assert "step 1:" in result.stderr and "--reward-timeout" in result.stderr
