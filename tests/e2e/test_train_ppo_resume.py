"""train-ppo runs compared with each other: a resumed run's next step, a run with evaluation, a per-sample
reward function, Ray workers against the driver's process, each against the run it must equal. The real CLI in a
subprocess, its roles in its own process (one worker each, no GPUs) unless a test asks for Ray workers. One run,
with evaluation and the per-sample reward (`evaluated_run`), serves the tests of both, against one plain run
(`plain_run`): a run costs its process starts (seconds each), its steps hardly anything.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from rlhfctl.net import free_port
from tests.helpers import ENV, write_jsonl
from tests.helpers.train_ppo import base_args, deepspeed_weights, metrics, safetensors_weights, train


pytestmark = pytest.mark.slow

# The same reward written for OpenRLHF v0.11, which calls reward_func once per sample: index [0], return scalars.
REWARD_PER_SAMPLE = '''
import torch

def reward_func(queries, prompts, labels, **kwargs):
    response = queries[0][len(prompts[0]):]
    reward = torch.tensor(response.count("e") / max(1, len(response)))
    return {"rewards": reward, "scores": reward, "extra_logs": {"label_seen": torch.tensor([1.0])}}
'''


# Both runs of the evaluation and per-sample tests. Neither the reference nor the critic is what they are about:
# group_norm and no KL term leave the actor alone (with --engine torch: no DeepSpeed start).
PLAIN = ["--advantage-estimator", "group_norm", "--engine", "torch", "--init-kl-coef", "0", "--num-episodes", "3",
         "--actor-learning-rate", "1e-3"]


@pytest.fixture(scope="module")
def plain_run(tiny_policy_dir, prompt_file, reward_file, tmp_path_factory):
    """OUT of a 6-step run (PLAIN) with the batch reward_func in one worker, no evaluation. Read-only."""
    out = tmp_path_factory.mktemp("plain") / "out"
    result = train(base_args(tiny_policy_dir, prompt_file, out, str(reward_file), None) + PLAIN)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def evaluated_run(tiny_policy_dir, prompt_file, tmp_path_factory):
    """(OUT, stderr) of plain_run's run with --eval-dataset, scored by the same reward written per-sample
    (REWARD_PER_SAMPLE) in two workers: one run that the evaluation test and the per-sample test both compare with
    plain_run, as each changes nothing that plain_run's rewards depend on. Read-only."""
    root = tmp_path_factory.mktemp("evaluated")
    per_sample = root / "per_sample.py"
    per_sample.write_text(REWARD_PER_SAMPLE)
    out = root / "out"
    result = train(base_args(tiny_policy_dir, prompt_file, out, str(per_sample), None) + PLAIN + [
        "--reward-workers", "2", "--eval-dataset", str(prompt_file), "--eval-max-samples", "3", "--eval-steps", "4",
        "--eval-temperature", "0", "--eval-n-samples-per-prompt", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stderr


def test_eval_dataset_measures_the_policy_without_changing_training(plain_run, evaluated_run):
    """--eval-dataset: eval/* before the first step, every --eval-steps and after the last, from the run's reward
    (extra_logs included); greedy samples of one prompt agree, so pass@2 equals the mean; and training draws the
    same samples as a run without evaluation."""
    evaluated, stderr = evaluated_run
    records = metrics(evaluated)
    assert [m["step"] for m in records] == [0, 1, 2, 3, 4, 5, 6]
    with_eval = [m for m in records if "eval/reward" in m]
    assert [m["step"] for m in with_eval] == [0, 4, 6]
    for m in with_eval:
        assert m["eval/pass@2"] == pytest.approx(m["eval/reward"])
        assert m["eval/label_seen"] == 1.0 and m["eval/response_length"] > 0
    assert with_eval[0]["eval/reward"] != with_eval[-1]["eval/reward"]  # the policy trained in between
    assert len(metrics(plain_run)) == len(records) - 1
    for a, b in zip(metrics(plain_run), records[1:]):
        assert a["step"] == b["step"] and a["reward"] == pytest.approx(b["reward"], rel=1e-6)
    assert re.search(r"step 4/6 .*eval -?\d", stderr)  # the live line shows the held-out reward
    assert "samples per prompt (--eval-n-samples-per-prompt) will be identical" in " ".join(stderr.split())


def test_ray_workers_train_as_the_driver_does(plain_run, tiny_policy_dir, prompt_file, reward_file, tmp_path):
    """plain_run's run with --role-workers ray: a local Ray started by the run (as a user's run with the option
    does; the address file of a `ray start` cluster that died without `ray stop` lies in Ray's folder, and the run
    starts its own Ray anyway), its actor a Ray worker on one thread. Every step's metrics equal the driver's."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: Ray's socket paths live under it
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    out = tmp_path / "out"
    try:
        result = train(base_args(tiny_policy_dir, prompt_file, out, str(reward_file), None) + PLAIN
                       + ["--role-workers", "ray"], env={**ENV, "RAY_TMPDIR": str(ray_tmp)})
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no GPUs in the Ray cluster" in result.stderr and "placement: actor 0 on " in result.stderr
    on_ray, in_driver = metrics(out), metrics(plain_run)
    assert [m["step"] for m in on_ray] == [m["step"] for m in in_driver] == list(range(1, 7))
    for a, b in zip(on_ray, in_driver):
        for key in ("reward", "policy_loss", "response_length", "actor_grad_norm", "actor_lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["step"], key)
    assert on_ray[-1]["actor_torch_threads"] == 1.0  # read back from the worker: one thread per CPU it owns
    assert in_driver[-1]["actor_torch_threads"] >= 1.0


def test_resume_gives_the_same_next_step(tiny_policy_dir, prompt_file, reward_file, tmp_path):
    """Two steps straight, against one step, a checkpoint, and a resumed second step (actor + critic, DeepSpeed),
    with the actor's moving average (--enable-ema) and PPO-ptx's loss (--pretrain-data): the saved policy is the
    average of the weights after each update, and the resumed run goes on with the saved average."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    pretrain = write_jsonl(tmp_path / "pretrain.jsonl", [{"input": f"{a} plus {b} is {a + b}."} for a in range(3)
                                                         for b in range(3)])
    extra = ["--advantage-estimator", "gae", "--save-steps", "1", "--actor-learning-rate", "1e-3", "--enable-ema",
             "--ema-beta", "0.5", "--pretrain-data", str(pretrain), "--ptx-coef", "0.5"]
    first = train(base_args(tiny_policy_dir, prompt_file, straight, str(reward_file), None) + extra)
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.copytree(straight / "ckpt" / "global_step1", resumed / "ckpt" / "global_step1")
    second = train(base_args(tiny_policy_dir, prompt_file, resumed, str(reward_file), None) + extra
                   + ["--load-checkpoint"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stderr
    a, b = metrics(straight)[1], metrics(resumed)[0]
    assert a["step"] == b["step"] == 2
    for key in ("reward", "kl", "policy_loss", "value_loss", "response_length", "actor_grad_norm",
                "critic_grad_norm", "actor_lr", "actor_ptx_loss"):
        assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert 0 < a["actor_ptx_loss"] < 20
    # beta 1/2, one update per step: the average is 1/4 w0 + 1/4 w1 + 1/2 w2 (w0 as loaded, wN after step N)
    w0, saved = safetensors_weights(tiny_policy_dir), safetensors_weights(straight)
    w1, w2 = (deepspeed_weights(straight / "ckpt" / f"global_step{n}" / "actor") for n in (1, 2))
    name = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(w1[name], w2[name])
    torch.testing.assert_close(saved[name], 0.25 * w0[name] + 0.25 * w1[name] + 0.5 * w2[name])
    assert set(saved) == set(w0)
    for name, tensor in safetensors_weights(resumed).items():  # the resumed average went on from the saved one
        torch.testing.assert_close(tensor, saved[name], rtol=1e-4, atol=1e-6)


def test_a_per_sample_reward_func_trains_exactly_as_the_batch_one(plain_run, evaluated_run):
    """OpenRLHF v0.11's per-sample reward_func (found out by --reward-func-batching auto), in two worker processes,
    gives the batch one's rewards (plain_run, one worker) at every step (evaluated_run's training steps: evaluation
    changes none of them, test_eval_dataset_measures_the_policy_without_changing_training)."""
    runs = {name: [(m["reward"], m["reward/label_seen"]) for m in metrics(folder) if m["step"] > 0]
            for name, folder in (("batch", plain_run), ("per_sample", evaluated_run[0]))}
    assert runs["per_sample"] == runs["batch"] and len(runs["batch"]) == 6
