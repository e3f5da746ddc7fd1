"""train-ppo fails loudly and never loses work: NaN/inf stop the run with a checkpoint of the last good step (or are
skipped), and errors raised inside Ray workers read as in-process (kill -9 during saves: test_checkpoint_kills.py).
The real CLI in a subprocess, real Ray and DeepSpeed, tiny models; the runs that are not about Ray workers run
their roles in their own process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import start_server, stop_server, write
from tests.helpers.train_ppo import base_args, metrics, train


pytestmark = pytest.mark.slow


def _args(policy, prompts, out, reward, ray_address, *extra):
    return base_args(policy, prompts, out, reward, ray_address) + ["--engine", "torch", *extra]


def _state_dict(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def _assert_one_line_error(result, code):
    assert result.returncode == code, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "RayTaskError" not in result.stderr
    return errors[0]


# ------------------------------------------------------------------------------------------------ Ray errors
def test_a_critic_pretrain_typo_raised_in_the_worker_reads_as_in_process(tiny_policy_dir, prompt_file, reward_file,
                                                                        tmp_path, ray_address):
    # gae: the critic's worker is the one that raises; no KL term, so no reference worker starts for nothing
    result = train(_args(tiny_policy_dir, prompt_file, tmp_path / "out", str(reward_file), ray_address,
                         "--advantage-estimator", "gae", "--init-kl-coef", "0",
                         "--critic-pretrain", str(tmp_path / "no_such_critic")))
    line = _assert_one_line_error(result, 2)
    assert f"--critic-pretrain {tmp_path / 'no_such_critic'}: no such folder" in line


def test_a_critic_world_size_that_does_not_divide_the_batch_exits_2(tiny_policy_dir, prompt_file, reward_file,
                                                                   tmp_path, ray_address):
    result = train(_args(tiny_policy_dir, prompt_file, tmp_path / "out", str(reward_file), ray_address,
                         "--critic-num-gpus-per-node", "3"))
    line = _assert_one_line_error(result, 2)
    assert "must be a multiple of --micro-train-batch-size (4) x data-parallel size (the critic's) (3) = 12" in line


# ------------------------------------------------------------------------------------------------ NaN / inf
def _reward_model_with_mean(folder: Path, mean: float) -> Path:
    """A tiny OpenRLHF-layout reward model whose config.json normalisation mean is `mean` (NaN, inf)."""
    from rlhfctl.models.tiny import make_tiny_reward_model

    path = make_tiny_reward_model(folder, format="openrlhf", value_head_prefix="value_head", normalize_reward=True)
    config = json.loads((path / "config.json").read_text())
    config["mean"] = mean
    (path / "config.json").write_text(json.dumps(config))  # NaN / Infinity: what Python's json reads back
    return path


@pytest.fixture(scope="module")
def nan_reward_model(tmp_path_factory):
    """A local reward model (no contract check on its output) whose rewards are all NaN."""
    return _reward_model_with_mean(tmp_path_factory.mktemp("nan_rm"), float("nan"))


@pytest.fixture(scope="module")
def inf_reward_model(tmp_path_factory):
    """Its rewards are all -inf, which --reward-clip-range would have turned into a plausible -10."""
    return _reward_model_with_mean(tmp_path_factory.mktemp("inf_rm"), float("inf"))


def _rm_args(policy, prompts, out, rm, ray_address, *extra):
    args = _args(policy, prompts, out, "unused", ray_address, "--reward-pretrain", str(rm), "--normalize-reward",
                 "--advantage-estimator", "group_norm", "--init-kl-coef", "0", *extra)
    i = args.index("--remote-rm-url")
    return args[:i] + args[i + 2:]


def test_a_nan_reward_from_a_local_model_stops_with_the_last_good_checkpoint(tiny_policy_dir, prompt_file,
                                                                           nan_reward_model, tmp_path):
    out = tmp_path / "out"
    result = train(_rm_args(tiny_policy_dir, prompt_file, out, nan_reward_model, None))
    line = _assert_one_line_error(result, 1)
    assert "step 1: reward of sample 0 is nan, so the run stops before training on it" in line
    text = " ".join(result.stderr.split())
    assert "Checkpoint of step 0, the last good step, saved in" in text and "sample 0: prompt" in text
    assert metrics(out) == []  # nothing was trained on, nothing logged as null
    ckpt = out / "ckpt" / "global_step0"
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == 0
    import torch

    saved = torch.load(ckpt / "actor" / "global_step0" / "engine_state.pt", weights_only=True)["model"]
    initial = _state_dict(tiny_policy_dir)
    assert all(torch.equal(saved[k], initial[k]) for k in initial)


def test_skip_nonfinite_batches_skips_an_inf_reward_and_counts_it(tiny_policy_dir, prompt_file, inf_reward_model,
                                                                  tmp_path):
    out = tmp_path / "out"
    result = train(_rm_args(tiny_policy_dir, prompt_file, out, inf_reward_model, None,
                            "--skip-nonfinite-batches", "--actor-learning-rate", "1e-2"))
    assert result.returncode == 0, result.stderr[-3000:]
    steps = metrics(out)
    assert [m["step"] for m in steps] == [1, 2] and all(m["nonfinite_skipped"] == 1.0 for m in steps)
    assert all(None not in m.values() for m in steps)
    assert "reward of sample 0 is -inf; batch skipped" in " ".join(result.stderr.split())
    import torch

    trained, initial = _state_dict(out), _state_dict(tiny_policy_dir)
    assert all(torch.equal(trained[k], initial[k]) for k in initial)  # never trained on an infinite reward


REWARD_WITH_A_NAN = '''
def reward_func(queries, prompts, labels, **kwargs):
    return [float("nan") if i == 5 else 0.5 for i in range(len(queries))]
'''


@pytest.fixture(scope="module")
def nan_reward_server(tmp_path_factory):
    """serve-rm whose reward_func answers NaN for sample 5 of each batch (a step's 8 samples in one request)."""
    reward = write(tmp_path_factory.mktemp("nan_server"), REWARD_WITH_A_NAN)
    proc, url, _ = start_server("--reward-func", str(reward))
    yield url
    stop_server(proc)


@pytest.mark.parametrize("skip", [False, True])
def test_a_nan_from_a_reward_server_stops_or_is_skipped_as_a_local_one(tiny_policy_dir, prompt_file,
                                                                        nan_reward_server, tmp_path, skip):
    """serve-rm's 422 names the sample; train-ppo stops before training on it (a checkpoint of the last good step)
    or, with --skip-nonfinite-batches, skips the batch and counts it: the same as for a local reward model."""
    out = tmp_path / "out"
    result = train(_args(tiny_policy_dir, prompt_file, out, nan_reward_server, None,
                         "--advantage-estimator", "group_norm", "--init-kl-coef", "0", "--actor-learning-rate", "1e-2",
                         *(["--skip-nonfinite-batches"] if skip else [])))
    text = " ".join(result.stderr.split())
    if skip:
        assert result.returncode == 0, result.stderr[-3000:]
        assert [(m["step"], m["nonfinite_skipped"]) for m in metrics(out)] == [(1, 1.0), (2, 1.0)]
        assert "step 1: reward of sample 5 is nan; batch skipped" in text and "sample 5: prompt" in text
        import torch

        trained, initial = _state_dict(out), _state_dict(tiny_policy_dir)
        assert all(torch.equal(trained[k], initial[k]) for k in initial)
        return
    line = _assert_one_line_error(result, 1)
    assert "step 1: reward of sample 5 is nan, so the run stops before training on it" in line
    assert "--skip-nonfinite-batches skips such batches instead" in text
    assert "Checkpoint of step 0, the last good step, saved in" in text and "sample 5: prompt" in text
    assert "retry" not in text  # the server said retrying cannot help
    assert metrics(out) == []


def test_a_diverging_update_is_never_applied_and_its_state_not_saved(tiny_policy_dir, prompt_file, reward_file,
                                                                      tmp_path):
    """A learning rate of 1e30: the first update of step 1 blows the weights up, the second one's loss is NaN.
    The run stops naming it; the diverged weights are not saved as a checkpoint."""
    out = tmp_path / "out"
    result = train(_args(tiny_policy_dir, prompt_file, out, str(reward_file), None,
                         "--advantage-estimator", "group_norm", "--init-kl-coef", "0", "--train-batch-size", "4",
                         "--actor-learning-rate", "1e30", "--lr-warmup-ratio", "0"))
    line = _assert_one_line_error(result, 1)
    assert "step 1: the actor's policy_loss is nan in its update 2 (epoch 1), so that update was not applied" in line
    text = " ".join(result.stderr.split())
    assert "had applied 1 update(s) of step 1 before it" in text and "the newest checkpoint is none" in text
    assert not (out / "ckpt").exists() or not any((out / "ckpt").glob("global_step*"))
    assert metrics(out) == []


# ------------------------------------------------------------------------------------------------ offload
def test_ref_reward_offload_reaches_the_ray_workers(tiny_policy_dir, tiny_rm_seqcls_dir, ray_address):
    """The reference and reward-model roles, as Ray actors of the shared cluster, run the offload path per call."""
    import torch

    from rlhfctl.config import PlacementArgs, TrainPPOConfig, VLLMArgs
    from rlhfctl.config.slices import ReferenceGroups, RewardModelGroups
    from rlhfctl.distributed.placement import place, release
    from rlhfctl.distributed.roles import RoleGroup, get
    from rlhfctl.ppo.workers import ReferenceWorker, RewardModelWorker

    cfg = TrainPPOConfig(pretrain=str(tiny_policy_dir), prompt_data="p.jsonl", reward_pretrain=str(tiny_rm_seqcls_dir),
                         ray_address=ray_address, ref_reward_offload=True, micro_rollout_batch_size=2,
                         ref_num_gpus_per_node=1, reward_num_gpus_per_node=1)
    plan = place(cfg.slice(PlacementArgs), cfg.slice(VLLMArgs), ["ref", "reward"])
    try:
        ref = RoleGroup("ref", plan, ReferenceWorker, ReferenceGroups.of(cfg)).wait_ready()
        reward = RoleGroup("reward", plan, RewardModelWorker, RewardModelGroups.of(cfg)).wait_ready()
        ids = torch.randint(5, 200, (2, 8))
        assert get(ref.all(ReferenceWorker.log_probs, ids, torch.ones_like(ids), 3))[0].shape == (2, 3)
        get(reward.all(RewardModelWorker.score, ["a b", "c d"], ["a", "c"], ["", ""]))
        assert get(ref.all(ReferenceWorker.offload_onloads)) == [1]
        assert get(reward.all(RewardModelWorker.offload_onloads)) == [1]
        # An unexpected exception in a worker: one line naming role, rank and exception; the traceback kept aside.
        from rlhfctl.errors import WorkerError

        with pytest.raises(WorkerError) as caught:
            get(ref.all(ReferenceWorker.log_probs, ids, torch.ones(2, 3, dtype=torch.long), 3))
        message = str(caught.value)
        assert message.startswith("ref worker 0 failed (log_probs): ") and "\n" not in message
        assert "Traceback" in caught.value.remote_traceback and "action_log_probs" in caught.value.remote_traceback
    finally:
        release(plan)
