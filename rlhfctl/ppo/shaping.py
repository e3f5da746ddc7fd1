"""From a scored rollout to the Experience the workers train on: what the driver does between reward and update.

Pure tensors and the run's config, no Ray, so the trainer's own path is unit-tested (tests/unit/test_ppo_shaping.py).
Order, as OpenRLHF v0.10 (experience_maker.compute_advantages_and_returns): the length penalties (DAPO overlong,
ProRL stop-properly) change the raw reward; the group baseline shapes it; the shaped reward is clipped to
--reward-clip-range and placed on the last token with the per-token KL penalty (unless --use-kl-loss moves the KL
into the actor's loss); then advantages and returns. DAPO's group filter (dynamic_filter_keep) runs before all this,
on the raw scores, in the trainer's rollout.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from rlhfctl.ppo import functional as F
from rlhfctl.config.groups import RolloutArgs
from rlhfctl.config.train_groups import PPOArgs, TrainArgs
from rlhfctl.ppo.experience import Experience, Samples


def penalised_rewards(ppo: PPOArgs, rollout: RolloutArgs, rewards: Tensor, samples: Samples) -> tuple[Tensor, dict[str, float]]:
    """The raw rewards with --overlong-buffer-len and --stop-properly-penalty-coef applied, and what they did."""
    info: dict[str, float] = {}
    lengths = samples.action_mask.sum(dim=1)
    if ppo.overlong_buffer_len is not None:
        penalty = F.overlong_penalty(lengths, rollout.generate_max_len, ppo.overlong_buffer_len,
                                     ppo.overlong_penalty_factor)
        rewards = rewards + penalty.to(rewards.dtype)
        info["overlong_penalized"] = float((penalty < 0).float().mean())
        info["overlong_penalty"] = float(penalty.mean())
    if samples.truncated is not None:
        info["truncated"] = float(samples.truncated.float().mean())
        if ppo.stop_properly_penalty_coef is not None:
            rewards = F.stop_properly_penalty(rewards, samples.truncated, ppo.stop_properly_penalty_coef)
    return rewards, info


def old_log_probs_in_training(train: TrainArgs, ppo: PPOArgs, rollout: RolloutArgs, vllm_engines: int) -> bool:
    """Whether the actor's log-probs before its update are exactly those its training forward computes, so the
    experience's own forward of the actor can be left out (as TRL's GRPO does when it trains once per generation).

    That holds when the step is one optimizer update (one epoch, --train-batch-size = the rollout's samples: no
    micro-batch sees weights another one changed), the actor itself sampled (Hugging Face generate, not vLLM,
    whose log-probs differ and are compared with the actor's), no earlier policy sampled (not --async-train), and
    nothing else reads those log-probs before training: the KL in the reward (only --use-kl-loss or no KL), an
    adaptive KL coefficient, the IS correction, or steps where the actor does not train."""
    one_update = train.max_epochs == 1 and train.train_batch_size == rollout.rollout_batch_size * rollout.n_samples_per_prompt
    kl_in_loss_or_none = ppo.use_kl_loss or ppo.init_kl_coef == 0
    return (one_update and not vllm_engines and not train.async_train and kl_in_loss_or_none
            and ppo.kl_target is None and not ppo.enable_vllm_is_correction and train.freezing_actor_steps <= 0)


def build_experience(ppo: PPOArgs, rollout: RolloutArgs, samples: Samples, raw_rewards: Tensor,
                     log_probs: Optional[Tensor], ref_log_probs: Optional[Tensor], values: Optional[Tensor],
                     kl_coef: float) -> tuple[Experience, dict[str, float]]:
    """Experience (advantages, returns, the tensors the actor and critic losses read) and the step's metrics.
    `log_probs` None: the actor's training forward gives them (`old_log_probs_in_training`), and the step's KL
    metric comes from it too."""
    action_mask = samples.action_mask
    rewards, info = penalised_rewards(ppo, rollout, raw_rewards, samples)
    kl = F.approx_kl(log_probs, ref_log_probs, action_mask, ppo.kl_estimator) \
        if ref_log_probs is not None and log_probs is not None else None
    kl_in_reward = kl is not None and not ppo.use_kl_loss and kl_coef > 0
    advantages, returns = F.compute_advantages(
        ppo.advantage_estimator, rewards, kl if kl_in_reward else None, action_mask, values=values,
        gamma=ppo.gamma, lambd=ppo.lambd, kl_coef=kl_coef, n_samples_per_prompt=rollout.n_samples_per_prompt,
        whiten=ppo.advantage_whiten,  # None: OpenRLHF's default per estimator
        whiten_std=ppo.advantage_std_norm, reward_clip_range=tuple(ppo.reward_clip_range),
    )
    rollout_log_probs = None
    if ppo.enable_vllm_is_correction:
        # HF generate samples with the actor itself: its log-probs are the rollout's, and every weight is 1.
        rollout_log_probs = samples.rollout_log_probs if samples.rollout_log_probs is not None else log_probs
    lengths = action_mask.sum(dim=1).float()
    experience = Experience(samples.sequences, samples.attention_mask, action_mask, log_probs, rewards,
                            ref_log_probs=ref_log_probs if ppo.use_kl_loss else None, values=values,
                            advantages=advantages, returns=returns, kl=kl, rollout_log_probs=rollout_log_probs,
                            info={"response_length": lengths},
                            kl_loss_coef=kl_coef if ppo.use_kl_loss else 0.0)
    info.update({"reward": float(raw_rewards.mean()),
                 "reward_std": float(raw_rewards.std()) if len(raw_rewards) > 1 else 0.0,
                 "response_length": float(lengths.mean()),
                 "advantages_abs": float(F.masked_mean(advantages.abs(), action_mask))})
    if log_probs is not None:
        seq_kl = F.masked_mean(kl, action_mask, dim=1) if kl is not None else torch.zeros(len(samples))
        info["kl"] = float(seq_kl.mean())
    if rewards is not raw_rewards:
        info["reward_penalized"] = float(rewards.mean())
    if values is not None:
        info["values"] = float(F.masked_mean(values, action_mask))
    return experience, info
