"""OpenRLHF's own launch scripts (three vintages) through `rlhfctl ... --print-config`, and the alias table's rules:
spellings, value transforms, multi-value forms, YAML keys, warnings and refusals."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from rlhfctl.config import COMMANDS
from rlhfctl.config.aliases import TABLES, spelling_key
from tests.helpers import run_cli
from tests.helpers.openrlhf_scripts import OPTIONS, SCRIPTS

LAUNCHERS = {"openrlhf.cli.train_ppo_ray": "train-ppo", "openrlhf.cli.serve_rm": "serve-rm"}
PARSERS = {"train_ppo_ray": "train-ppo", "serve_rm": "serve-rm"}


def script_argv(text: str) -> list[str]:
    """`ray job submit ... -- python3 -m openrlhf.cli.X ARGS` -> ["<rlhfctl command>", *ARGS]."""
    tokens = shlex.split(text)
    if tokens[0] == "ray":
        tokens = tokens[tokens.index("--") + 1:]
    assert tokens[0] in ("python", "python3") and tokens[1] == "-m", tokens[:3]
    return [LAUNCHERS[tokens[2]], *tokens[3:]]


def vintage(source: str) -> str:
    return source.split("@v")[1].split(".post")[0]


def test_the_table_covers_every_vintage_and_both_commands():
    kinds = {(vintage(src), script_argv(text)[0]) for src, _, text in SCRIPTS}
    assert len(SCRIPTS) >= 20
    for version in ("0.8.9", "0.10.1", "0.11.0"):
        assert {(version, "train-ppo"), (version, "serve-rm")} <= kinds, version


@pytest.mark.parametrize("source, refused, text", SCRIPTS, ids=[src for src, _, _ in SCRIPTS])
def test_openrlhf_script_prints_config_or_names_the_missing_features(source, refused, text, capsys):
    args = script_argv(text)
    code, out, err = run_cli([*args, "--print-config"], capsys)
    assert "Traceback" not in out + err
    if refused:
        assert code == 2, err
        named = re.findall(r"^(?:Error: |  )(--[\w.]+)", err, re.M)
        assert tuple(named) == refused  # every missing feature, in one message
        assert "not built yet" in err or "not supported" in err
        return
    assert code == 0, err
    cfg = yaml.safe_load(out)
    model = cfg["reward_pretrain" if args[0] == "serve-rm" else "pretrain"]
    assert model.startswith(("OpenRLHF/", "meta-llama/", "${"))  # a Hub ID or the script's variable, unresolved
    assert cfg["bf16"] is True  # each of these scripts asks for bf16, in its vintage's spelling


def test_every_option_of_every_vintage_is_recognised():
    """Each option string of OpenRLHF's parsers is an rlhfctl field or an entry of the alias table."""
    for (parser, version), names in OPTIONS.items():
        command = PARSERS[parser]
        fields = COMMANDS[command].model_fields
        missing = [n for n in names if spelling_key(n) not in TABLES[command] and n.lstrip("-") not in fields]
        assert not missing, (parser, version, missing)


# ------------------------------------------------------------------------------------------ meanings
TRAIN = ["train-ppo", "--actor.model_name_or_path", "OpenRLHF/Llama-3-8b-sft-mixture", "--data.prompt_dataset",
         "OpenRLHF/prompt-collection-v0.1", "--reward.remote_url", "http://127.0.0.1:5000/get_reward"]


def printed(args: list[str], capsys) -> tuple[dict, str]:
    code, out, err = run_cli([*args, "--print-config"], capsys)
    assert code == 0, err
    return yaml.safe_load(out), err


def test_dotted_names_set_the_same_fields_as_flat_ones(capsys):
    dotted, _ = printed([*TRAIN, "--ds.zero_stage", "3", "--algo.kl.init_coef", "1e-3", "--rollout.batch_size", "64",
                         "--train.micro_batch_size", "4", "--actor.adam.lr", "5e-7", "--ckpt.output_dir", "/o"],
                        capsys)
    flat, _ = printed(["train-ppo", "--pretrain", "OpenRLHF/Llama-3-8b-sft-mixture", "--prompt_data",
                       "OpenRLHF/prompt-collection-v0.1", "--remote_rm_url", "http://127.0.0.1:5000/get_reward",
                       "--zero-stage", "3", "--init_kl_coef", "0.001", "--rollout_batch_size", "64",
                       "--micro-train-batch-size", "4", "--actor_learning_rate", "5e-7", "--save_path", "/o"], capsys)
    assert dotted == flat
    assert (dotted["zero_stage"], dotted["init_kl_coef"], dotted["save_path"]) == (3, 0.001, "/o")


@pytest.mark.parametrize("args, expected", [
    (["--param_dtype", "bf16"], {"bf16": True}),
    (["--ds.param_dtype", "bf16", "--ds.attn_implementation", "flash_attention_2"], {"bf16": True, "flash_attn": True}),
    (["--attn_implementation", "eager"], {"flash_attn": False}),
    (["--max_new_tokens", "512"], {"generate_max_len": 512}),
    (["--max_len", "9216", "--max_new_tokens", "8192"], {"prompt_max_len": 1024, "generate_max_len": 8192}),
    (["--data.max_len", "4096", "--rollout.max_new_tokens", "2048"],
     {"prompt_max_len": 2048, "generate_max_len": 2048}),
    (["--max_len", "3000", "--prompt_max_len", "1000"], {"prompt_max_len": 1000, "generate_max_len": 2000}),
    (["--reward_clip_range", "-10", "10"], {"reward_clip_range": [-10.0, 10.0]}),
    (["--reward.clip_range", "-5", "5"], {"reward_clip_range": [-5.0, 5.0]}),
    (["--reward-clip-range", "-3,3"], {"reward_clip_range": [-3.0, 3.0]}),
    (["--adam_betas", "0.9", "0.99", "--l2", "0.01"], {"adam_betas": [0.9, 0.99], "weight_decay": 0.01}),
    (["--actor.adam.betas", "0.9", "0.98", "--critic.adam.betas", "0.9", "0.98"], {"adam_betas": [0.9, 0.98]}),
    (["--lr_scheduler", "cosine_with_min_lr", "--lora_rank", "0", "--ring_attn_size", "1"], {}),
    (["--ref.offload", "--reward.offload"], {"ref_reward_offload": True}),
    # LoRA in each vintage's spelling (v0.8.9 and v0.10 flat, v0.11 dotted), and QLoRA (refused on CPU at run time)
    (["--lora_rank", "16", "--lora_alpha", "32", "--lora_dropout", "0.05", "--target_modules", "q_proj", "v_proj"],
     {"lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}),
    (["--ds.lora.rank", "16", "--ds.lora.alpha", "32", "--ds.lora.dropout", "0.05", "--ds.lora.target_modules",
      "q_proj", "v_proj"],
     {"lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}),
    (["--lora_rank", "64", "--target_modules", "all-linear", "--load_in_4bit"],
     {"lora_rank": 64, "target_modules": ["all-linear"], "load_in_4bit": True}),
    (["--ckpt.load_enable", "--eval.steps", "-1", "--logger.tensorboard_dir", "/tb"],
     {"load_checkpoint": True, "eval_steps": -1, "use_tensorboard": "/tb"}),
])
def test_openrlhf_values_mean_what_the_script_author_meant(args, expected, capsys):
    cfg, err = printed([*TRAIN, *args], capsys)
    assert {k: cfg[k] for k in expected} == expected
    assert "Warning" not in err  # these all act: nothing to warn about


def test_serve_rm_max_len_is_the_reward_models_truncation(capsys):
    cfg, _ = printed(["serve-rm", "--reward_pretrain", "OpenRLHF/Llama-3-8b-rm-700k", "--max_len", "8192"], capsys)
    assert cfg["reward_max_len"] == 8192
    cfg, _ = printed(["serve-rm", "--reward.model_name_or_path", "OpenRLHF/Llama-3-8b-rm-700k", "--data.max_len",
                      "4096", "--ds.param_dtype", "bf16"], capsys)
    assert (cfg["reward_max_len"], cfg["bf16"]) == (4096, True)


def test_max_len_alone_is_split_with_a_warning(capsys):
    cfg, err = printed([*TRAIN, "--max_len", "2048"], capsys)
    assert (cfg["prompt_max_len"], cfg["generate_max_len"]) == (1024, 1024)
    assert "--max_len 2048" in err and "--max-new-tokens" in err


def test_options_without_effect_here_warn_once_each_and_run(capsys):
    cfg, err = printed([*TRAIN, "--vllm_num_engines", "2", "--vllm_enable_sleep", "--save_hf_ckpt",
                        "--deepspeed_enable_sleep"], capsys)
    warnings = [line for line in err.splitlines() if line.startswith("Warning")]
    for option in ("--vllm_enable_sleep", "--save_hf_ckpt", "--deepspeed_enable_sleep"):
        assert sum(line.startswith(f"Warning: {option}:") for line in warnings) == 1, (option, warnings)
    assert cfg["pretrain"] == "OpenRLHF/Llama-3-8b-sft-mixture"
    # OpenRLHF's "off" value of an option asks for nothing: no warning
    _, err = printed([*TRAIN, "--vllm_tensor_parallel_size", "1"], capsys)
    assert "Warning" not in err


@pytest.mark.parametrize("args, needle", [
    (["--image_key", "images"], "--image_key images: vision-language prompts are not supported"),
    (["--ring_attn_size", "2"], "--ring-attn-size 2 splits packed rows: add --packing-samples"),
    (["--ds.ring_attn_size", "2", "--packing_samples"], "--ring-attn-size 2 does not divide the 1 workers of the actor"),
    (["--ring_head_stride", "2"], "--ring-head-stride has no effect without --ring-attn-size > 1"),
    (["--partial_rollout"], "--partial-rollout needs --async-train"),
    (["--param_dtype", "fp16"], "fp16 training is not supported"),
    (["--actor.min_lr_ratio", "0.2"], "the cosine schedule ends at 0.1"),
    (["--lr_scheduler", "polynomial"], "--lr-scheduler"),
    (["--policy_loss_type", "reinforce"], "--policy-loss-type"),
    (["--dual_clip", "0.5"], "--dual-clip"),
    (["--actor.adam.lr", "1e-6", "--actor.max_norm", "1", "--critic.max_norm", "2"], "give them the same value"),
    (["--reward_clip_range", "-10"], "--reward-clip-range"),
    (["--max_len", "many"], "--max_len: a number of tokens is needed"),
    (["--max_len", "100", "--prompt_max_len", "80", "--generate_max_len", "40"], "less than --prompt-max-len"),
    (["--eps_clip_low_high", "0.2"], "--eps-clip-low-high"),
    (["--max_new_tokens", "512", "--generate-max-len", "256"], "set the same option to different values"),
    (["--bf16=false"], "--bf16 is a switch"),
    (["--packing_samples=1"], "--packing_samples is a switch"),
])
def test_unsupported_or_contradictory_options_exit_2_naming_them(args, needle, capsys):
    code, out, err = run_cli([*TRAIN, *args, "--print-config"], capsys)
    assert code == 2, err
    assert needle in " ".join(err.split())
    assert "Traceback" not in out + err


def test_every_refusal_is_named_in_one_message(capsys):
    code, _, err = run_cli([*TRAIN, "--use_ms", "--input_template", "Q: {}", "--image_key", "img"], capsys)
    assert code == 2
    assert all(option in err for option in ("--use_ms", "--input_template", "--image_key img"))


@pytest.mark.parametrize("args, field, value", [
    (["--use_kl_loss"], "use_kl_loss", True),
    (["--algo.kl.use_loss"], "use_kl_loss", True),
    (["--eps_clip_low_high", "0.2", "0.28"], "eps_clip_low_high", [0.2, 0.28]),
    (["--actor.eps_clip_low_high", "0.2", "0.28"], "eps_clip_low_high", [0.2, 0.28]),
    (["--advantage_estimator", "dr_grpo", "--n_samples_per_prompt", "4"], "advantage_estimator", "dr_grpo"),
    (["--algo.advantage.estimator", "dr_grpo", "--rollout.n_samples_per_prompt", "4"], "advantage_estimator",
     "dr_grpo"),
    (["--policy_loss_type", "gspo"], "policy_loss_type", "gspo"),
    (["--dual_clip", "3"], "dual_clip", 3.0),
    (["--lr_scheduler", "constant"], "lr_scheduler", "constant"),
    (["--critic.freezing_steps", "2"], "freezing_actor_steps", 2),
    (["--no_advantage_std_norm"], "advantage_std_norm", False),
    (["--algo.advantage.no_std_norm"], "advantage_std_norm", False),
    (["--vllm_enable_is_correction"], "enable_vllm_is_correction", True),
    (["--algo.advantage.is_correction_enable", "--algo.advantage.is_correction_threshold", "0.4", "4"],
     "vllm_is_truncated_threshold", [0.4, 4.0]),
    (["--algo.dynamic_filtering_range", "0", "1"], "dynamic_filtering_reward_range", [0.0, 1.0]),
    (["--reward.overlong_buffer_len", "64"], "overlong_buffer_len", 64.0),
])
def test_algorithm_options_of_every_vintage_set_their_field(args, field, value, capsys):
    cfg, _ = printed([*TRAIN, *args], capsys)
    assert cfg[field] == value


def test_serve_rm_does_not_take_train_options(capsys):
    code, _, err = run_cli(["serve-rm", "--reward_pretrain", "rm", "--zero_stage", "3"], capsys)
    assert code == 2 and "--zero_stage" in err


# ------------------------------------------------------------------------------------------ YAML
def test_yaml_takes_dotted_keys_lists_and_the_same_transforms(tmp_path, capsys):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(
        "actor.model_name_or_path: OpenRLHF/Llama-3-8b-sft-mixture\n"
        "data.prompt_dataset: OpenRLHF/prompt-collection-v0.1\n"
        "reward.remote_url: http://127.0.0.1:5000/get_reward\n"
        "ds.param_dtype: bf16\n"
        "reward_clip_range: [-5, 5]\n"
        "actor.adam.betas: [0.9, 0.98]\n"
        "max_len: 3072\n"
        "max_new_tokens: 1024\n"
        "deepspeed_enable_sleep: true\n"
        "ds.packing_samples: true\n"
        "use_kl_loss: false\n"
        "ds.zero-stage: 3\n"
    )
    cfg, err = printed(["train-ppo", "--config", str(run_yaml)], capsys)
    assert (cfg["pretrain"], cfg["bf16"], cfg["reward_clip_range"], cfg["adam_betas"]) == (
        "OpenRLHF/Llama-3-8b-sft-mixture", True, [-5.0, 5.0], [0.9, 0.98])
    assert (cfg["prompt_max_len"], cfg["generate_max_len"], cfg["zero_stage"]) == (2048, 1024, 3)
    assert "Warning: deepspeed_enable_sleep" in err  # the same warning as on the command line
    assert cfg["packing_samples"] is True
    # a flag still beats the file
    cfg, _ = printed(["train-ppo", "--config", str(run_yaml), "--no-bf16"], capsys)
    assert cfg["bf16"] is False


def test_yaml_refusal_names_the_file_and_key(tmp_path, capsys):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("pretrain: p\nprompt_data: d\nremote_rm_url: http://h\nimage_key: img\n"
                        "input_template: 'Q: {}'\n")
    code, _, err = run_cli(["train-ppo", "--config", str(run_yaml)], capsys)
    assert code == 2
    text = " ".join(err.split())
    assert str(run_yaml) in text and "image_key" in text and "input_template" in text


def test_yaml_switch_needs_true_or_false(tmp_path, capsys):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("pretrain: p\nprompt_data: d\nremote_rm_url: http://h\nds.packing_samples: 3\n")
    code, _, err = run_cli(["train-ppo", "--config", str(run_yaml)], capsys)
    assert code == 2 and "'ds.packing_samples' is a switch" in err


def test_one_yaml_with_openrlhf_keys_serves_both_commands(tmp_path, capsys):
    """`max_len` is each command's OpenRLHF meaning; keys of the other command are ignored, not errors."""
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("reward_pretrain: OpenRLHF/Llama-3-8b-rm-700k\nmax_len: 4096\nparam_dtype: bf16\n"
                        "pretrain: p\nprompt_data: d\nzero_stage: 3\n")
    serve, _ = printed(["serve-rm", "--config", str(run_yaml)], capsys)
    assert (serve["reward_max_len"], serve["bf16"]) == (4096, True)
    train, err = printed(["train-ppo", "--config", str(run_yaml)], capsys)
    assert (train["prompt_max_len"], train["generate_max_len"], train["reward_max_len"]) == (2048, 2048, 2048)
    assert "max_len 4096" in err


# ------------------------------------------------------------------------------------------ help
def test_help_lists_the_openrlhf_spellings_under_rlhfctls_name(capsys):
    code, out, _ = run_cli(["train-ppo", "--help"], capsys)
    assert code == 0
    text = " ".join(out.replace("│", " ").split())
    assert "--zero-stage" in text and "--ds.zero_stage" in text
    assert "--bf16" in text and "--param_dtype" in text
    assert "--pretrain" in text and "--actor.model_name_or_path" in text


# ------------------------------------------------------------------------------------------ new fields act
def test_adam_betas_and_l2_reach_the_actor_and_critic_optimizer():
    """`--adam_betas 0.8 0.9 --l2 0.1` (a weight matrix decays, a bias does not), through the engine the workers build."""
    import torch

    from rlhfctl.config import ModelLoadArgs, TrainArgs, resolve
    from rlhfctl.ppo.workers import _build_engine

    cfg = resolve("train-ppo", {"pretrain": "p", "prompt_data": "d", "remote_rm_url": "http://h", "engine": "torch",
                                "micro_train_batch_size": 1, "train_batch_size": 1, "adam_betas": "0.8,0.9",
                                "weight_decay": 0.1})
    engine = _build_engine(torch.nn.Linear(4, 2), cfg.slice(TrainArgs), cfg.slice(ModelLoadArgs), learning_rate=1e-3,
                           total_updates=10)
    groups = engine._optimizer.param_groups
    assert {g["betas"] for g in groups} == {(0.8, 0.9)}
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.1]


def test_bench_rm_reads_serve_rm_spellings_for_the_server_it_starts(tmp_path, capsys):
    run_yaml = tmp_path / "serve.yaml"
    run_yaml.write_text("reward_pretrain: OpenRLHF/Llama-3-8b-rm-700k\nmax_len: 4096\nparam_dtype: bf16\n"
                        "batch_size: 8\n")
    cfg, _ = printed(["bench-rm", "--config", str(run_yaml), "--texts-per-request", "2"], capsys)
    assert (cfg["reward_max_len"], cfg["bf16"], cfg["batch_size"], cfg["texts_per_request"]) == (4096, True, 8, 2)


def test_the_common_options_take_snake_case_too(tmp_path, capsys):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("zero_stage: 3\n")
    code, out, err = run_cli([*TRAIN, f"--config={run_yaml}", "--print_config"], capsys)
    assert code == 0, err
    assert (yaml.safe_load(out)["pretrain"], yaml.safe_load(out)["zero_stage"]) == ("OpenRLHF/Llama-3-8b-sft-mixture", 3)


def test_one_option_given_twice_in_two_spellings_must_agree(tmp_path, capsys):
    cfg, _ = printed([*TRAIN, "--actor.max_norm", "1.0", "--critic.max_norm", "1", "--max_new_tokens", "64",
                      "--generate-max-len", "64"], capsys)  # the same value, written two ways: accepted
    assert (cfg["max_norm"], cfg["generate_max_len"]) == (1.0, 64)
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("generate_max_len: 256\nmax_new_tokens: 512\n")
    code, _, err = run_cli([*TRAIN, "--config", str(run_yaml), "--print-config"], capsys)
    assert code == 2 and "set the same option to different values" in " ".join(err.split())
