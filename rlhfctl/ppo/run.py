"""`train_ppo(cfg)`: everything a train-ppo run sets up and tears down around the PPO loop.

Prompts and the reward are opened first (cheap, and the likeliest to be wrong), then Ray places the roles, the
workers build their models in parallel, an optional checkpoint is loaded, the loop runs, and the final policy (and
critic) is saved with save_pretrained in --save-path. Ray, the reward client and the loggers are released on every
exit path.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import TYPE_CHECKING, Any, Optional


from rlhfctl.config.reward_groups import SourceGroups
from rlhfctl.config.slices import SamplingGroups

if TYPE_CHECKING:
    from rlhfctl.config import TrainPPOConfig
    from rlhfctl.rewards.base import RewardSource
    from rlhfctl.rollout.vllm_rollout import Episodes


def total_updates(cfg: TrainPPOConfig, total_steps: int) -> int:
    """Optimizer updates over the run, for the learning-rate schedule."""
    rows = cfg.rollout_batch_size * cfg.n_samples_per_prompt * cfg.max_epochs
    return max(1, total_steps * rows // cfg.train_batch_size)


def model_fields_used(cfg: TrainPPOConfig, roles: list[str]) -> list[str]:
    """The model options a run loads: the policy, the critic's source for gae, a reward model as a role."""
    fields = ["pretrain"]
    if "critic" in roles:
        fields.append("critic_pretrain" if cfg.critic_pretrain else "reward_pretrain" if cfg.reward_pretrain else "")
    if "reward" in roles:
        fields.append("reward_pretrain")
    if cfg.judge_model:
        fields.append("judge_model")
    return [f for f in dict.fromkeys(fields) if f]


def describe_rings(groups: dict[str, Any], ring: int, head_stride: int) -> str:
    """'ring attention: actor 4 workers = 2 ring(s) of 2 (data-parallel 2), ref 1 worker(s), rows whole, ...; 2
    key/value head(s) per exchange'."""
    from rlhfctl.models.ring_attention import role_ring

    parts = [f"{name} {len(groups[name])} workers = {len(groups[name]) // ring} ring(s) of {ring} (data-parallel "
             f"{len(groups[name]) // ring})" if role_ring(ring, len(groups[name])) > 1 else
             f"{name} {len(groups[name])} worker(s), rows whole" for name in ("actor", "ref", "critic") if name in groups]
    return f"ring attention: {', '.join(parts)}; {head_stride} key/value head(s) per exchange"


def _record_placement(save_path: str, report: dict) -> None:
    """--save-path/placement.json: the bundles' nodes as Ray placed them and the node each worker reports."""
    import json
    from pathlib import Path

    Path(save_path).mkdir(parents=True, exist_ok=True)
    (Path(save_path) / "placement.json").write_text(json.dumps(report, indent=2) + "\n")


def open_judge_in_driver(cfg: TrainPPOConfig) -> RewardSource:
    """The LLM judge scores in the driver, like a reward server's client: a --judge-url client, or a --judge-model
    on one torch thread (the Ray workers own the other cores)."""
    from rlhfctl.rewards.factory import open_judge

    if cfg.judge_model:
        from rlhfctl.serving.threads import configure_threads

        configure_threads(1)
    return open_judge(SourceGroups.of(cfg))


def agent_episodes(cfg: TrainPPOConfig) -> Optional[Episodes]:
    """With --agent-func-path, how the vLLM engines play episodes (rlhfctl/agents); None for single-turn samples."""
    if not cfg.agent_func_path:
        return None
    from rlhfctl.agents.vllm_engine import agent_generate

    return functools.partial(agent_generate, SamplingGroups.of(cfg))


def roles_of(cfg: TrainPPOConfig) -> list[str]:
    """The roles this run places (distributed/placement.py needed_roles)."""
    from rlhfctl.config import LoRAArgs, PlacementArgs, PPOArgs, RewardModelArgs, RewardSourceArgs
    from rlhfctl.distributed.placement import needed_roles

    roles = needed_roles(cfg.slice(PPOArgs), cfg.slice(PlacementArgs), cfg.slice(RewardModelArgs),
                         cfg.slice(RewardSourceArgs))
    if cfg.slice(LoRAArgs).reference_is_base:  # the actor's workers give the reference log-probs
        roles = [r for r in roles if r != "ref"]
    return roles


def train_ppo(cfg: TrainPPOConfig) -> dict[str, float]:
    """Run PPO as configured; returns the last step's metrics."""
    from rlhfctl.config.rules import check_eval, check_sizes
    from rlhfctl.data import load_prompts
    from rlhfctl.distributed.in_driver import in_driver_report, start_role
    from rlhfctl.distributed.placement import (check_engines_beside_driver, cluster_address, local_gpus, place,
                                               plan_in_driver, release)
    from rlhfctl.distributed.roles import describe_places, placement_report
    from rlhfctl.models.actor import load_tokenizer
    from rlhfctl.ppo.checkpoint import CheckpointManager, TrainerState
    from rlhfctl.ppo.model_options import check_four_bit, note_offload
    from rlhfctl.ppo.tracking import Tracker
    from rlhfctl.config import (EvalArgs, LoggingArgs, LoRAArgs, ModelLoadArgs, PlacementArgs, PPOArgs,
                                PretrainArgs, PtxArgs, RolloutArgs, RunArgs, TrainArgs, VLLMArgs)
    from rlhfctl.config.slices import CriticGroups, PolicyGroups, ReferenceGroups, RewardModelGroups
    from rlhfctl.ppo.profile import StepProfiler
    from rlhfctl.ppo.roles import Roles
    from rlhfctl.ppo.shaping import old_log_probs_in_training
    from rlhfctl.ppo.trainer import PPOTrainer, steps_per_episode
    from rlhfctl.ppo.workers import CriticWorker, PolicyWorker, ReferenceWorker, RewardModelWorker
    from rlhfctl.models.remote_code import announce
    from rlhfctl.ppo.reward_role import RoleReward
    from rlhfctl.rewards.cache import with_cache
    from rlhfctl.rewards.factory import open_combined, open_reward
    from rlhfctl.ppo.hf_rollout import HFRollout
    from rlhfctl.rollout.vllm_rollout import VLLMRollout, check_vllm, sync_backend

    from rlhfctl.config.hub_ids import resolve_fields

    import datasets

    datasets.disable_progress_bars()
    # Hub IDs become local folders here, once: the workers are given folders and never call the Hub.
    cfg = resolve_fields(cfg, model_fields_used(cfg, roles_of(cfg)))
    # One absolute folder for every role: a worker resolves a relative path against its own working directory (in a
    # Ray job, the working_dir unpacked on its node), not the driver's.
    cfg = cfg.model_copy(update={"save_path": os.path.abspath(cfg.save_path),
                                 "ckpt_path": os.path.abspath(cfg.ckpt_path)})
    if cfg.enable_vllm_is_correction and not cfg.vllm_num_engines:
        warnings.warn("--enable-vllm-is-correction: the rollouts come from the actor itself (Hugging Face generate), "
                      "so the rollout log-probs are the actor's own and every IS weight is 1 (vllm_kl 0); the "
                      "correction acts when vLLM engines generate (--vllm-num-engines)", stacklevel=2)
    tokenizer = load_tokenizer(cfg.pretrain, disable_fast_tokenizer=cfg.disable_fast_tokenizer)
    prompts = load_prompts(cfg.prompt_data, cfg.input_key, cfg.label_key, cfg.apply_chat_template, tokenizer,
                           cfg.max_samples, split=cfg.prompt_split)
    check_sizes(cfg, len(prompts))
    if cfg.agent_func_path:  # checked here, before Ray starts; the actor workers import it by absolute path
        from rlhfctl.agents.loader import load_agent

        cfg = cfg.model_copy(update={"agent_func_path": os.path.abspath(cfg.agent_func_path)})
        load_agent(cfg.agent_func_path, cfg.max_turns)
    if cfg.pretrain_data is not None:  # PPO-ptx's text, read here once to check it; each actor worker reads it
        from rlhfctl.ppo.ptx import checked_in_driver

        cfg = cfg.model_copy(update=checked_in_driver(cfg.slice(PtxArgs), cfg.input_key))
    if cfg.lora_path is not None:  # checked before Ray starts; the workers read it by absolute path
        from rlhfctl.models.lora import check_adapter_folder

        cfg = cfg.model_copy(update={"lora_path": os.path.abspath(cfg.lora_path)})
        check_adapter_folder(cfg.lora_path)
    eval_prompts = None
    if cfg.eval_dataset is not None:
        eval_prompts = load_prompts(cfg.eval_dataset, cfg.input_key, cfg.label_key, cfg.apply_chat_template,
                                    tokenizer, cfg.eval_max_samples, split=cfg.eval_split)
        check_eval(cfg, len(eval_prompts))
    total_steps = steps_per_episode(len(prompts), cfg.rollout_batch_size) * cfg.num_episodes
    updates = total_updates(cfg, total_steps)
    checkpoints = CheckpointManager(cfg.ckpt_path, cfg.max_ckpt_num)
    resume_from = checkpoints.latest() if cfg.load_checkpoint else None
    if cfg.load_checkpoint and resume_from is None:
        warnings.warn(f"--load-checkpoint: no complete checkpoint in {cfg.ckpt_path}; starting from step 0",
                      stacklevel=2)

    roles_needed = roles_of(cfg)
    joining = cluster_address(cfg) is not None
    if not joining:  # a local Ray: this machine's GPUs are the run's, so refuse before Ray starts
        check_four_bit(cfg.slice(ModelLoadArgs), cfg.slice(LoRAArgs), roles_needed, has_gpus=local_gpus() > 0,
                       where="this machine")
    if cfg.vllm_num_engines:
        check_vllm(cfg.slice(VLLMArgs), cfg.slice(PlacementArgs), cfg.slice(PretrainArgs))
    if cfg.ring_attn_size > 1:
        from rlhfctl.models.critic import critic_source
        from rlhfctl.models.ring_attention import check_head_stride

        critic = critic_source(cfg.critic_pretrain, cfg.reward_pretrain, cfg.pretrain) if "critic" in roles_needed \
            else cfg.pretrain
        for model in {cfg.pretrain, critic}:  # the critic splits its own heads
            check_head_stride(model, cfg.ring_head_stride)
    if cfg.torch_compile:
        from rlhfctl.models.compiled import check_can_compile

        check_can_compile(cfg.pretrain, samples_with_hf=not cfg.vllm_num_engines and not cfg.agent_func_path,
                          has_gpus=local_gpus() > 0, trust_remote_code=cfg.trust_remote_code)
    if "reward" in roles_needed:
        announce(cfg.reward_pretrain, cfg.trust_remote_code)  # before any worker loads it
    reward = open_reward(cfg.remote_rm_url, SourceGroups.of(cfg)) if cfg.remote_rm_url else \
        open_combined(cfg.reward, SourceGroups.of(cfg)) if cfg.reward else \
        open_judge_in_driver(cfg) if cfg.judge else None
    plan = engines_plan = None
    tracker = None
    rollout = None
    try:
        plan = plan_in_driver(cfg.slice(PlacementArgs), cfg.slice(VLLMArgs), roles_needed) or \
            place(cfg.slice(PlacementArgs), cfg.slice(VLLMArgs), roles_needed)
        if cfg.vllm_num_engines:  # in-driver roles: the engines alone on Ray
            engines_plan = place(cfg.slice(PlacementArgs), cfg.slice(VLLMArgs), ["vllm"]) if plan.in_driver else plan
            check_engines_beside_driver(plan, engines_plan)
        if joining and not plan.in_driver:
            check_four_bit(cfg.slice(ModelLoadArgs), cfg.slice(LoRAArgs), roles_needed, has_gpus=plan.use_gpus,
                           where="the Ray cluster")
        note_offload(cfg.slice(PlacementArgs), cfg.slice(ModelLoadArgs), roles_needed, has_gpus=plan.use_gpus)
        backend = sync_backend(cfg.slice(VLLMArgs), plan.use_gpus) if engines_plan else ""
        # each role gets the typed groups it reads (config/slices.py), pickled to every one of its workers
        groups = {"actor": start_role("actor", plan, PolicyWorker, PolicyGroups.of(cfg), updates)}
        if engines_plan is not None:  # engines load their model while the other roles load theirs
            rollout = VLLMRollout(SamplingGroups.of(cfg), cfg.slice(VLLMArgs), engines_plan, groups["actor"],
                                  tokenizer.pad_token_id, backend, episodes=agent_episodes(cfg))
        if "ref" in roles_needed:
            groups["ref"] = start_role("ref", plan, ReferenceWorker, ReferenceGroups.of(cfg))
        if "critic" in roles_needed:
            groups["critic"] = start_role("critic", plan, CriticWorker, CriticGroups.of(cfg), updates)
        if "reward" in roles_needed:
            groups["reward"] = start_role("reward", plan, RewardModelWorker, RewardModelGroups.of(cfg))
        for group in groups.values():
            group.wait_ready()
        _record_placement(cfg.save_path, in_driver_report(groups) if plan.in_driver else
                          placement_report(plan, groups))
        if "reward" in groups:
            reward = RoleReward(groups["reward"], f"reward model {cfg.reward_pretrain}", pairwise=cfg.pairwise)
        notes: list[str] = []
        if reward is not None:  # None: --agent-func-path, whose environment gives the rewards
            reward = with_cache(reward, cfg.reward_cache_size, notes)
        for note in notes:
            warnings.warn(note, stacklevel=2)
        if rollout is not None:
            rollout.wait_ready()
        roles = Roles(**groups, ref_in_actor=cfg.init_kl_coef > 0 and cfg.slice(LoRAArgs).reference_is_base,
                      ring=cfg.ring_attn_size, actor_log_probs=not old_log_probs_in_training(
                          cfg.slice(TrainArgs), cfg.slice(PPOArgs), cfg.slice(RolloutArgs), cfg.vllm_num_engines or 0))
        run_config = {k: v for k, v in cfg.model_dump().items() if k not in ("use_wandb", "api_key")}
        resume_step = TrainerState.from_file(resume_from / "trainer_state.json").step if resume_from else None
        tracker = Tracker(cfg.save_path, total_steps, resume_step=resume_step,
                          use_tensorboard=cfg.use_tensorboard, use_wandb=cfg.use_wandb,
                          run_config=run_config)
        trainer = PPOTrainer(roles, rollout or HFRollout(roles.actor, tokenizer.pad_token_id), reward, prompts,
                             eval_prompts, tracker, checkpoints, tokenizer.pad_token_id,
                             train=cfg.slice(TrainArgs), ppo=cfg.slice(PPOArgs), rollout=cfg.slice(RolloutArgs),
                             logging=cfg.slice(LoggingArgs), evaluation=cfg.slice(EvalArgs), run=cfg.slice(RunArgs),
                             profiler=StepProfiler(groups | ({"vllm": rollout.engines} if rollout else {}))
                             if cfg.profile else None)
        tracker.note(f"placement: {', '.join(groups)} in the driver's process (no Ray worker; --role-workers ray "
                     "for Ray workers)" if plan.in_driver else f"placement: {describe_places(groups)}")
        if rollout is not None:
            tracker.note(rollout.describe())
        if cfg.ring_attn_size > 1:
            tracker.note(describe_rings(groups, cfg.ring_attn_size, cfg.ring_head_stride))
        if resume_from is not None:
            trainer.load_checkpoint(str(resume_from))
            tracker.note(f"resumed from {resume_from} at step {trainer.state.step}")
        last = trainer.fit()
        # As in OpenRLHF, a resumable checkpoint (optimizer state: ~100 GB for an 8B model) only when asked for.
        if cfg.save_steps > 0 and trainer.state.step % cfg.save_steps:  # on a multiple, fit() just saved it
            trainer.save_checkpoint()
        trainer.save_pretrained(cfg.save_path)
        tracker.note(f"saved the policy in {cfg.save_path}")
        return last
    finally:
        if tracker is not None:
            tracker.close()
        if reward is not None:
            reward.close()
        if rollout is not None:
            rollout.close()
        for placed in {id(p): p for p in (plan, engines_plan) if p is not None}.values():
            release(placed)
