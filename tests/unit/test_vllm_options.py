"""vLLM options: what they set, and the clear exit-2 messages for what the engines cannot do (no worker starts)."""

from __future__ import annotations

import sys

import pytest
import yaml

from tests.helpers import run_cli



def base(tmp_path, policy, prompts) -> list[str]:
    return ["train-ppo", "--pretrain", str(policy), "--prompt-data", str(prompts), "--remote-rm-url",
            str(tmp_path / "r.py"), "--rollout-batch-size", "2", "--train-batch-size", "4",
            "--micro-train-batch-size", "1", "--save-path", str(tmp_path / "out")]


def test_openrlhf_spellings_set_the_vllm_fields(tiny_policy_dir, prompt_file, tmp_path, capsys):
    code, out, err = run_cli([*base(tmp_path, tiny_policy_dir, prompt_file), "--vllm_num_engines", "2",
                               "--vllm.sync_backend", "gloo", "--vllm_sync_with_ray", "--enforce_eager",
                               "--vllm.gpu_memory_utilization", "0.05", "--rollout.vllm_generate_batch_size", "8",
                               "--vllm.enable_prefix_caching", "--print-config"], capsys)
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert (cfg["vllm_num_engines"], cfg["vllm_sync_backend"], cfg["vllm_sync_with_ray"], cfg["enforce_eager"],
            cfg["vllm_gpu_memory_utilization"], cfg["vllm_generate_batch_size"], cfg["enable_prefix_caching"]) == \
        (2, "gloo", True, True, 0.05, 8, True)


@pytest.mark.parametrize("args, needle", [
    (["--enforce-eager"], "--enforce-eager has no effect without --vllm-num-engines"),
    (["--vllm-sync-backend", "gloo", "--vllm-tensor-parallel-size", "2"],
     "--vllm-tensor-parallel-size has no effect without --vllm-num-engines"),
    (["--vllm-num-engines", "1", "--vllm-sync-backend", "mpi"], "vllm-sync-backend"),
    (["--vllm-num-engines", "1", "--vllm-gpu-memory-utilization", "1.5"], "vllm-gpu-memory-utilization"),
    (["--vllm-num-engines", "0", "--enable-prefix-caching"], "--enable-prefix-caching has no effect without"),
    (["--vllm-num-engines", "-1"], "vllm-num-engines"),
])
def test_bad_vllm_options_exit_2_naming_the_option(args, needle, tiny_policy_dir, prompt_file, tmp_path, capsys):
    code, _, err = run_cli([*base(tmp_path, tiny_policy_dir, prompt_file), *args, "--print-config"], capsys)
    err = " ".join(err.split())
    assert code == 2 and needle in err and "Traceback" not in err, err


def test_a_tensor_parallel_size_the_heads_cannot_split_exits_2_before_ray(tiny_policy_dir, prompt_file, tmp_path,
                                                                           capsys):
    code, _, err = run_cli([*base(tmp_path, tiny_policy_dir, prompt_file), "--vllm-num-engines", "1",
                             "--vllm-tensor-parallel-size", "4"], capsys)
    err = " ".join(err.split())
    assert code == 2, err
    assert "--vllm-tensor-parallel-size 4: the policy has 2 attention heads" in err
    assert not (tmp_path / "out").exists()


def test_a_broken_vllm_install_stops_the_run_with_its_import_error(tiny_policy_dir, prompt_file, tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what Python does for a package that failed to import
    code, _, err = run_cli([*base(tmp_path, tiny_policy_dir, prompt_file), "--vllm-num-engines", "1"], capsys)
    err = " ".join(err.split())
    assert code == 2, err
    assert "--vllm-num-engines 1: vLLM cannot be imported (ModuleNotFoundError" in err
    assert "Traceback" not in err


def test_engines_are_a_placed_role_and_colocate_by_their_gpus():
    from rlhfctl.config import PlacementArgs, TrainPPOConfig, VLLMArgs
    from rlhfctl.distributed.placement import plan_roles
    from rlhfctl.errors import ConfigError
    from rlhfctl.ppo.run import roles_of

    def cfg(**kw):
        return TrainPPOConfig(pretrain="p", prompt_data="d", remote_rm_url="r.py", advantage_estimator="group_norm",
                              init_kl_coef=0, n_samples_per_prompt=2, **kw)

    def plan_of(run, use_gpus):
        return plan_roles(run.slice(PlacementArgs), run.slice(VLLMArgs), roles_of(run), use_gpus=use_gpus)

    assert roles_of(cfg()) == ["actor"] and roles_of(cfg(vllm_num_engines=0)) == ["actor"]
    plan = plan_of(cfg(vllm_num_engines=3), use_gpus=False)
    assert plan.roles["vllm"].num_workers == 3 and plan.bundles == {"actor": 1, "vllm": 3}
    hybrid = cfg(vllm_num_engines=2, vllm_tensor_parallel_size=2, actor_num_gpus_per_node=4, train_batch_size=4,
                 micro_train_batch_size=1, colocate_all_models=True)
    plan = plan_of(hybrid, use_gpus=True)
    assert plan.roles["vllm"].group == "actor" and plan.bundles == {"actor": 4}
    # engine i's TP workers take bundles 2i, 2i+1 (its Ray executor's); the engine actor itself holds no GPU
    assert [plan.roles["vllm"].bundle_index(i) for i in (0, 1)] == [0, 2]
    assert plan.roles["vllm"].resources(True) == {"num_gpus": 0, "num_cpus": 0}
    # engines of their own: N one-GPU (or one-CPU) bundles per engine, so placement asks for N per engine
    tp = plan_of(cfg(vllm_num_engines=2, vllm_tensor_parallel_size=2), use_gpus=False)
    assert tp.bundles == {"actor": 1, "vllm": 4} and tp.total() == {"CPU": 5.0}
    assert [tp.roles["vllm"].bundle_index(i) for i in (0, 1)] == [0, 2]
    assert tp.roles["vllm"].resources(False) == {"num_gpus": 0, "num_cpus": 1.0}
    with pytest.raises(ConfigError, match="vllm asks for 2 GPUs but is colocated with actor, which asks for 4; "
                                          "colocated roles need the same --vllm-num-engines x"):
        bad = hybrid.model_copy(update={"vllm_tensor_parallel_size": 1})
        plan_of(bad, use_gpus=True)
