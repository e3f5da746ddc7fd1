"""OpenRLHF's option names, three vintages, mapped onto rlhfctl's one schema: THE alias table.

Users arrive with launch scripts for OpenRLHF v0.8.9 (flat names: `--bf16`, `--prompt_max_len`), v0.10
(`--param_dtype bf16`, `--max_len` = prompt + response, `--max_new_tokens`) and v0.11 (dotted groups:
`--actor.model_name_or_path`, `--ds.zero_stage`). Every option of `train_ppo_ray` and `serve_rm` in those releases
(../shared/reference/openrlhf/*.tsv) is one entry here, per command, with one of three dispositions:

- alias:  sets a schema field (maybe through a value transform); `--help` lists it under the field.
- warn:   accepted; it has no effect on what is learned and cannot act here (vLLM memory, DeepSpeed tuning, logging
          knobs), so one warning at start says so.
- refuse: exit 2 naming the feature; used where the option's absence would change WHAT is learned (algorithm
          options not built yet, LoRA, vision-language inputs). When a feature lands, its entries flip to alias.

A warn or refuse entry may list `harmless` values: OpenRLHF's "off" value (`--lora_rank 0`), which asks for
nothing rlhfctl lacks and is accepted without a word. Spellings are keys in snake_case with v0.11's dots kept;
kebab-case is the same key (`--ds.zero-stage` = `--ds.zero_stage`). Pure data and small functions: no heavy imports.
"""

from __future__ import annotations

from typing import Any

from rlhfctl.config.translation import (TOTAL_LEN, Convert, Entry, Translation, alias, refuse, same_values, switch,
                                        transform, warn)
from rlhfctl.errors import UsageError

__all__ = ["TABLES", "Entry", "Translation", "aliases_of", "lookup", "same_values", "spelling_key"]

def _param_dtype(spelling: str, values: list[str]) -> dict[str, Any]:
    dtype = values[0].lower()
    if dtype in ("bf16", "bfloat16"):
        return {"bf16": True}
    if dtype in ("fp32", "float32"):
        return {"bf16": False}
    raise UsageError(f"{spelling} {values[0]}: fp16 training is not supported; use bf16 (--bf16) or fp32 (default)")


def _attn_implementation(spelling: str, values: list[str]) -> dict[str, Any]:
    # eager and sdpa compute the same attention; only flash-attention 2 is a separate switch here.
    return {"flash_attn": values[0].lower() in ("flash_attention_2", "flash_attention_3", "flash_attn")}


def _total_len(spelling: str, values: list[str]) -> dict[str, Any]:
    return {TOTAL_LEN: (spelling, values[0])}


def _no_std_norm(spelling: str, values: list[str]) -> dict[str, Any]:
    return {"advantage_std_norm": False}


def _only(value: str, what: str) -> Convert:
    """An option rlhfctl has one setting of: that value is accepted, another one is refused naming the feature."""
    def check(spelling: str, values: list[str]) -> dict[str, Any]:
        if not same_values(values, value):
            raise UsageError(f"{spelling} {' '.join(values)}: {what}")
        return {}

    return check


# ----------------------------------------------------------------------------------------------- the table
def _spell(*names: str, entry: Entry) -> dict[str, Entry]:
    return {name: entry for name in names}


NO_SLEEP = ("no effect: the hybrid engine (vLLM engines sleeping while training runs) is not built; engines keep "
            "their memory")
DS_TUNING = "no effect: a DeepSpeed/GPU performance setting rlhfctl does not expose; training is unchanged"
NOT_BUILT = "is not built yet"


def _placement() -> dict[str, Entry]:
    """v0.11's `--actor.num_nodes` etc.; the flat `--actor_num_nodes` is rlhfctl's own field name."""
    return {f"{role}.{what}": alias(f"{role}_{what}") for role in ("actor", "ref", "critic", "reward")
            for what in ("num_nodes", "num_gpus_per_node")}


TRAIN_PPO: dict[str, Entry] = {
    **_placement(),
    **_spell("train.colocate_actor_ref", entry=switch("colocate_actor_ref")),
    **_spell("train.colocate_critic_reward", entry=switch("colocate_critic_reward")),
    **_spell("train.colocate_all", entry=switch("colocate_all_models")),
    **_spell("vllm.num_engines", entry=alias("vllm_num_engines")),
    **_spell("vllm.tensor_parallel_size", entry=alias("vllm_tensor_parallel_size")),
    **_spell("vllm.sync_backend", entry=alias("vllm_sync_backend")),
    **_spell("vllm.sync_with_ray", entry=switch("vllm_sync_with_ray")),
    **_spell("vllm.enable_prefix_caching", entry=switch("enable_prefix_caching")),
    **_spell("vllm.enforce_eager", entry=switch("enforce_eager")),
    **_spell("vllm_enable_sleep", "vllm.enable_sleep", entry=warn(NO_SLEEP, 0)),
    **_spell("vllm.gpu_memory_utilization", entry=alias("vllm_gpu_memory_utilization")),
    **_spell("rollout.vllm_generate_batch_size", entry=alias("vllm_generate_batch_size")),
    # vllm_enable_is_correction: the spelling of OpenRLHF v0.10's own DAPO script (its parser says enable_vllm_...)
    **_spell("vllm_enable_is_correction", "algo.advantage.is_correction_enable",
             entry=switch("enable_vllm_is_correction")),
    **_spell("algo.advantage.is_correction_threshold", entry=alias("vllm_is_truncated_threshold", "+")),
    **_spell("algo.advantage.is_correction_type", entry=alias("vllm_is_correction_type")),
    **_spell("train.async_enable", entry=switch("async_train")),
    **_spell("train.async_queue_size", entry=alias("async_queue_size")),
    **_spell("train.partial_rollout_enable", entry=switch("partial_rollout")),
    **_spell("eval.steps", entry=alias("eval_steps")),
    **_spell("ckpt.save_steps", entry=alias("save_steps")),
    **_spell("logger.logging_steps", entry=alias("logging_steps")),
    **_spell("ckpt.path", entry=alias("ckpt_path")),
    **_spell("save_hf_ckpt", "ckpt.save_hf", entry=warn(
        "no effect: the final policy is always saved with save_pretrained in --save-path", 0)),
    **_spell("disable_ds_ckpt", "ckpt.disable_ds", entry=warn(
        "no effect: checkpoints always keep the optimizer state needed to resume", 0)),
    **_spell("ckpt.max_num", entry=alias("max_ckpt_num")),
    **_spell("max_ckpt_mem", "ckpt.max_mem", entry=warn(
        "no effect: checkpoints are limited by count (--max-ckpt-num) only", harmless=("inf", "100000000"))),
    **_spell("ckpt.load_enable", entry=switch("load_checkpoint")),
    **_spell("best_metric_key", "ckpt.best_metric_key", entry=warn(
        "no effect: the newest checkpoints are kept, not the best by a metric", harmless=("",))),
    **_spell("use_ds_universal_ckpt", "ds.use_universal_ckpt", entry=warn(
        "no effect: resume with the same number of workers", 0)),
    **_spell("local_rank", entry=warn("no effect: Ray starts the workers, not the deepspeed launcher",
                                      harmless=("-1",))),
    **_spell("ds.zero_stage", entry=alias("zero_stage")),
    **_spell("actor.gradient_checkpointing_enable", entry=switch("gradient_checkpointing")),
    **_spell("deepcompile", "ds.deepcompile", entry=warn(DS_TUNING, 0)),
    **_spell("param_dtype", "ds.param_dtype", entry=transform(_param_dtype, "bf16")),
    **_spell("train.enable_ema", entry=switch("enable_ema")),
    **_spell("train.ema_beta", entry=alias("ema_beta")),
    **_spell("zpg", "ds.zpg", entry=warn(DS_TUNING, harmless=("1",))),
    **_spell("ds.adam_offload", entry=switch("adam_offload")),
    **_spell("actor_init_on_gpu", entry=warn(DS_TUNING, 0)),
    **_spell("attn_implementation", "ds.attn_implementation", entry=transform(_attn_implementation, "flash_attn")),
    **_spell("ds.experts_implementation", entry=warn(DS_TUNING, harmless=("none",))),
    **_spell("use_liger_kernel", "ds.use_liger_kernel", entry=warn(DS_TUNING, 0)),
    **_spell("grad_accum_dtype", "ds.grad_accum_dtype", entry=warn(DS_TUNING, harmless=("none",))),
    **_spell("overlap_comm", "ds.overlap_comm", entry=warn(DS_TUNING, 0)),
    **_spell("gradient_checkpointing_use_reentrant", "actor.gradient_checkpointing_reentrant", entry=warn(
        "no effect: gradient checkpointing is always non-reentrant (the reentrant form breaks under ZeRO-3)", 0)),
    **_spell("data.disable_fast_tokenizer", entry=switch("disable_fast_tokenizer")),
    **_spell("dataloader_num_workers", "data.dataloader_num_workers", entry=warn(
        "no effect: prompts are read in the driver", harmless=("0",))),
    **_spell("deepspeed_enable_sleep", "ds.enable_sleep", entry=warn(DS_TUNING, 0)),
    **_spell("ds_tensor_parallel_size", "ds.tensor_parallel_size", entry=warn(DS_TUNING, harmless=("1",))),
    **_spell("ds.packing_samples", entry=switch("packing_samples")),
    **_spell("train.dynamic_batch_enable", entry=switch("use_dynamic_batch")),
    **_spell("rollout.max_tokens_per_gpu", entry=alias("rollout_max_tokens_per_gpu")),
    **_spell("train.max_tokens_per_gpu", entry=alias("train_max_tokens_per_gpu")),
    **_spell("ds.load_in_4bit", entry=switch("load_in_4bit")),
    # --lora_rank etc. are rlhfctl's own flags (snake_case is kebab-case); v0.11's dotted names alias them.
    **_spell("ds.lora.rank", entry=alias("lora_rank")),
    **_spell("ds.lora.alpha", entry=alias("lora_alpha")),
    **_spell("ds.lora.dropout", entry=alias("lora_dropout")),
    **_spell("ds.lora.target_modules", entry=alias("target_modules", "+")),
    **_spell("ckpt.output_dir", entry=alias("save_path")),
    **_spell("train.num_episodes", entry=alias("num_episodes")),
    **_spell("rollout.batch_size", entry=alias("rollout_batch_size")),
    **_spell("rollout.micro_batch_size", entry=alias("micro_rollout_batch_size")),
    **_spell("train.max_epochs", entry=alias("max_epochs")),
    # --max_len: prompt + response in train_ppo_ray (v0.10+; "deprecated" but the same in v0.8.9). Split in `finish`.
    **_spell("max_len", "data.max_len", entry=transform(_total_len, "prompt_max_len", "generate_max_len")),
    **_spell("max_new_tokens", "rollout.max_new_tokens", entry=alias("generate_max_len")),
    **_spell("data.max_samples", entry=alias("max_samples")),
    **_spell("actor.max_norm", "critic.max_norm", entry=alias("max_norm")),
    **_spell("l2", "actor.adam.weight_decay", "critic.adam.weight_decay", entry=alias("weight_decay")),
    **_spell("actor.eps_clip", entry=alias("eps_clip")),
    **_spell("actor.eps_clip_low_high", entry=alias("eps_clip_low_high", 2)),
    **_spell("actor.dual_clip", entry=alias("dual_clip")),
    **_spell("critic.value_clip", entry=alias("value_clip")),
    **_spell("algo.advantage.lambd", entry=alias("lambd")),
    **_spell("algo.advantage.gamma", entry=alias("gamma")),
    **_spell("train.micro_batch_size", entry=alias("micro_train_batch_size")),
    **_spell("train.batch_size", entry=alias("train_batch_size")),
    **_spell("reward.normalize_enable", entry=switch("normalize_reward")),
    **_spell("rollout.top_p", entry=alias("top_p")),
    **_spell("rollout.temperature", entry=alias("temperature")),
    **_spell("train.seed", entry=alias("seed")),
    **_spell("full_determinism", "train.full_determinism_enable", entry=warn(
        "no effect: runs are seeded with --seed; bitwise-deterministic kernels are not forced", 0)),
    **_spell("critic.freezing_steps", entry=alias("freezing_actor_steps")),
    **_spell("rollout.n_samples_per_prompt", entry=alias("n_samples_per_prompt")),
    **_spell("save_value_network", "critic.save_value_network", entry=warn(
        "no effect: the critic is always saved, in --save-path/critic", 0)),
    **_spell("actor.adam.lr", entry=alias("actor_learning_rate")),
    **_spell("critic.adam.lr", entry=alias("critic_learning_rate")),
    **_spell("actor.lr_warmup_ratio", "critic.lr_warmup_ratio", entry=alias("lr_warmup_ratio")),
    **_spell("actor.lr_scheduler", "critic.lr_scheduler", entry=alias("lr_scheduler")),
    **_spell("actor.min_lr_ratio", "critic.min_lr_ratio", entry=transform(_only(
        "0.1", "the cosine schedule ends at 0.1 of the learning rate; another end is not built yet"))),
    **_spell("actor.optim", "critic.optim", entry=transform(_only("adam", "only the Adam optimizer is built"))),
    **_spell("actor.muon.lr", "critic.muon.lr", entry=refuse("the Muon optimizer is not built", harmless=("0.02",))),
    **_spell("actor.muon.momentum", "critic.muon.momentum",
             entry=refuse("the Muon optimizer is not built", harmless=("0.95",))),
    **_spell("actor.muon.ns_steps", "critic.muon.ns_steps",
             entry=refuse("the Muon optimizer is not built", harmless=("5",))),
    **_spell("actor.muon.nesterov", "critic.muon.nesterov", "actor.muon.no_nesterov", "critic.muon.no_nesterov",
             entry=refuse("the Muon optimizer is not built", 0)),
    **_spell("actor.adam.betas", "critic.adam.betas", entry=alias("adam_betas", 2)),
    **_spell("actor.adam.eps", "critic.adam.eps", entry=transform(_only(
        "1e-8", "Adam's epsilon is fixed at 1e-8 (another value is not built)"))),
    **_spell("algo.kl.target", entry=alias("kl_target")),
    **_spell("algo.kl.horizon", entry=alias("kl_horizon")),
    **_spell("algo.kl.init_coef", entry=alias("init_kl_coef")),
    **_spell("algo.kl.estimator", entry=alias("kl_estimator")),
    **_spell("actor.policy_loss_type", entry=alias("policy_loss_type")),
    **_spell("aux_loss_coef", "actor.aux_loss_coef",
             entry=refuse(f"the mixture-of-experts auxiliary loss {NOT_BUILT}", harmless=("0",))),
    **_spell("actor.entropy_coef", entry=alias("entropy_loss_coef")),
    **_spell("reward.clip_range", entry=alias("reward_clip_range", 2)),
    **_spell("algo.advantage.estimator", entry=alias("advantage_estimator")),
    **_spell("algo.kl.use_loss", entry=switch("use_kl_loss")),
    # A file key `no_advantage_std_norm: true` as well as the flag (the flag alone would be the field's --no- form).
    **_spell("no_advantage_std_norm", "algo.advantage.no_std_norm", entry=transform(_no_std_norm, "advantage_std_norm",
                                                                                    nargs=0)),
    **_spell("reward.overlong_buffer_len", entry=alias("overlong_buffer_len")),
    **_spell("reward.overlong_penalty_factor", entry=alias("overlong_penalty_factor")),
    **_spell("reward.stop_properly_penalty_coef", entry=alias("stop_properly_penalty_coef")),
    **_spell("ds.ring_attn_size", entry=alias("ring_attn_size")),
    **_spell("ds.ring_attn_head_stride", entry=alias("ring_head_stride")),
    **_spell("actor.model_name_or_path", entry=alias("pretrain")),
    **_spell("reward.model_name_or_path", entry=alias("reward_pretrain")),
    **_spell("reward.remote_url", entry=alias("remote_rm_url")),
    **_spell("critic.model_name_or_path", entry=alias("critic_pretrain")),
    **_spell("ds.value_head_prefix", entry=alias("value_head_prefix")),
    **_spell("ref.offload", "reward.offload", entry=switch("ref_reward_offload")),
    **_spell("train.agent_func_path", entry=alias("agent_func_path")),
    **_spell("data.prompt_dataset", entry=alias("prompt_data")),
    **_spell("prompt_data_probs", "data.prompt_probs", entry=refuse(
        "sampling prompt datasets with given probabilities is not built (--prompt-data files are concatenated)",
        harmless=("1.0", "none"))),
    **_spell("data.prompt_split", entry=alias("prompt_split")),
    **_spell("eval.dataset", entry=alias("eval_dataset")),
    **_spell("eval.split", entry=alias("eval_split")),
    **_spell("eval.temperature", entry=alias("eval_temperature")),
    **_spell("eval.n_samples_per_prompt", entry=alias("eval_n_samples_per_prompt")),
    **_spell("data.input_key", entry=alias("input_key")),
    **_spell("data.label_key", entry=alias("label_key")),
    **_spell("input_template", "data.input_template", entry=refuse(
        "prompt templates are not built: format prompts with --apply-chat-template or in the dataset",
        harmless=("none",))),
    **_spell("data.apply_chat_template", entry=switch("apply_chat_template")),
    **_spell("logger.wandb.key", entry=alias("use_wandb")),
    **_spell("wandb_org", "logger.wandb.org", entry=warn("not passed on: set WANDB_ENTITY instead")),
    **_spell("wandb_group", "logger.wandb.group", entry=warn("not passed on: set WANDB_RUN_GROUP instead")),
    **_spell("wandb_project", "logger.wandb.project", entry=warn("not passed on: set WANDB_PROJECT instead")),
    **_spell("wandb_run_name", "logger.wandb.run_name", entry=warn("not passed on: set WANDB_NAME instead")),
    **_spell("algo.dynamic_filtering_enable", entry=switch("dynamic_filtering")),
    **_spell("algo.dynamic_filtering_range", entry=alias("dynamic_filtering_reward_range", 2)),
    **_spell("image_key", "data.image_key", entry=refuse("vision-language prompts are not supported")),
    **_spell("max_images_per_prompt", "data.max_images_per_prompt",
             entry=refuse("vision-language prompts are not supported", harmless=("0",))),
    **_spell("freeze_visual_encoder", "actor.freeze_visual_encoder",
             entry=refuse("vision-language prompts are not supported", 0)),
    **_spell("logger.tensorboard_dir", entry=alias("use_tensorboard")),
    **_spell("perf", entry=warn("no effect: throughput is in metrics.jsonl (time/*) anyway", 0)),
    **_spell("use_ms", entry=refuse("ModelScope downloads are not supported (models come from the Hugging Face Hub "
                                    "or a local folder)", 0)),
}

# serve_rm's options: the same meanings as train_ppo_ray's, except --max_len, which is the reward model's truncation.
_SERVE_SHARED = ("reward.model_name_or_path", "reward.normalize_enable", "ds.value_head_prefix", "ds.load_in_4bit",
                 "param_dtype", "ds.param_dtype", "attn_implementation", "ds.attn_implementation",
                 "ds.experts_implementation", "data.disable_fast_tokenizer", "use_ms")
SERVE_RM: dict[str, Entry] = {
    **{name: TRAIN_PPO[name] for name in _SERVE_SHARED},
    **_spell("max_len", "data.max_len", entry=alias("reward_max_len")),
    **_spell("packing_samples", "ds.packing_samples", entry=warn(
        "no effect: texts are scored in padded, length-sorted batches", 0)),
}

# check-reward's own older name: its --timeout bounded one reward call, which --reward-timeout now does everywhere.
CHECK_REWARD: dict[str, Entry] = {**_spell("timeout", entry=alias("reward_timeout"))}

# bench-rm starts a serve-rm with its server options, so a serve_rm spelling means the same there.
TABLES: dict[str, dict[str, Entry]] = {"train-ppo": TRAIN_PPO, "serve-rm": SERVE_RM, "bench-rm": SERVE_RM,
                                       "check-reward": CHECK_REWARD}


# ----------------------------------------------------------------------------------------------- applying it
def spelling_key(raw: str) -> str:
    """`--ds.zero-stage` / `ds.zero_stage` / `--max-new-tokens` -> the table key (snake_case, dots kept)."""
    return raw.lstrip("-").replace("-", "_")


def lookup(command: str, raw: str) -> Entry | None:
    return TABLES.get(command, {}).get(spelling_key(raw))


def aliases_of(command: str, field_name: str) -> list[str]:
    """The OpenRLHF spellings that set `field_name` in `command`, for --help."""
    return ["--" + key for key, entry in TABLES.get(command, {}).items()
            if entry.kind == "alias" and field_name in entry.targets()]
