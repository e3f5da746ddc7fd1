"""Bundles of typed slices for the code below the CLI that reads many groups, each built by one `.of(cfg)`.

A Ray worker is pickled with what it is constructed from, so each role gets the groups it reads and nothing else:
no reward client options, no API key, no logging options travel to a vLLM engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhfctl.config.commands import CheckRewardConfig, TrainPPOConfig
from rlhfctl.config.groups import (CheckArgs, DataArgs, ModelLoadArgs, RewardModelArgs, RolloutArgs, RunArgs)
from rlhfctl.config.train_groups import (AgentArgs, EvalArgs, PolicyArgs, PPOArgs, PretrainArgs, TrainArgs)


@dataclass(frozen=True)
class SamplingGroups:
    """How a train-ppo run samples responses from its policy, whichever backend does it: HF generate in the actor
    workers, the vLLM engines, or agent episodes (--agent-func-path)."""

    model: PretrainArgs
    load: ModelLoadArgs
    rollout: RolloutArgs
    evaluation: EvalArgs
    run: RunArgs
    agent: AgentArgs

    def temperature(self, evaluation: bool) -> float:
        """--eval-temperature when evaluating, else --temperature."""
        return self.evaluation.eval_temperature if evaluation else self.rollout.temperature

    @classmethod
    def of(cls, cfg: TrainPPOConfig) -> "SamplingGroups":
        return cls(cfg.slice(PretrainArgs), cfg.slice(ModelLoadArgs), cfg.slice(RolloutArgs), cfg.slice(EvalArgs),
                   cfg.slice(RunArgs), cfg.slice(AgentArgs))


@dataclass(frozen=True)
class PolicyGroups:
    """What an actor worker reads: how it samples, how it is trained, and the PPO policy loss."""

    sampling: SamplingGroups
    train: TrainArgs
    ppo: PPOArgs

    @classmethod
    def of(cls, cfg: TrainPPOConfig) -> "PolicyGroups":
        return cls(SamplingGroups.of(cfg), cfg.slice(TrainArgs), cfg.slice(PPOArgs))


@dataclass(frozen=True)
class CriticGroups:
    """What a critic worker reads: the models it may start from (--critic-pretrain, else --reward-pretrain, else
    --pretrain), how it is trained, and the value loss."""

    model: PretrainArgs
    critic: PolicyArgs
    reward_model: RewardModelArgs
    load: ModelLoadArgs
    train: TrainArgs
    rollout: RolloutArgs
    ppo: PPOArgs
    run: RunArgs

    @classmethod
    def of(cls, cfg: TrainPPOConfig) -> "CriticGroups":
        return cls(cfg.slice(PretrainArgs), cfg.slice(PolicyArgs), cfg.slice(RewardModelArgs), cfg.slice(ModelLoadArgs),
                   cfg.slice(TrainArgs), cfg.slice(RolloutArgs), cfg.slice(PPOArgs), cfg.slice(RunArgs))


@dataclass(frozen=True)
class ReferenceGroups:
    """What the reference worker reads: the policy's initial weights and the rollout forward's batching; `offload`
    is --ref-reward-offload."""

    model: PretrainArgs
    load: ModelLoadArgs
    train: TrainArgs
    rollout: RolloutArgs
    offload: bool

    @classmethod
    def of(cls, cfg: TrainPPOConfig) -> "ReferenceGroups":
        return cls(cfg.slice(PretrainArgs), cfg.slice(ModelLoadArgs), cfg.slice(TrainArgs), cfg.slice(RolloutArgs),
                   cfg.ref_reward_offload)


@dataclass(frozen=True)
class RewardModelGroups:
    """What a local reward model worker (--reward-pretrain as a role) reads; `offload` is --ref-reward-offload."""

    model: RewardModelArgs
    load: ModelLoadArgs
    offload: bool

    @classmethod
    def of(cls, cfg: TrainPPOConfig) -> "RewardModelGroups":
        return cls(cfg.slice(RewardModelArgs), cfg.slice(ModelLoadArgs), cfg.ref_reward_offload)


@dataclass(frozen=True)
class CheckSampleGroups:
    """What check-reward builds its samples from: the dataset, --responses, and for model:DIR how it samples."""

    check: CheckArgs
    data: DataArgs
    model: PretrainArgs
    load: ModelLoadArgs
    rollout: RolloutArgs
    run: RunArgs

    @classmethod
    def of(cls, cfg: CheckRewardConfig) -> "CheckSampleGroups":
        return cls(cfg.slice(CheckArgs), cfg.slice(DataArgs), cfg.slice(PretrainArgs), cfg.slice(ModelLoadArgs),
                   cfg.slice(RolloutArgs), cfg.slice(RunArgs))
