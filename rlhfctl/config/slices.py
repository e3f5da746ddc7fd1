"""Bundles of typed slices for the code below the CLI that reads many groups, each built by one `.of(cfg)`.

A Ray worker is pickled with what it is constructed from, so each role gets the groups it reads and nothing else:
no reward client options, no API key, no logging options travel to a vLLM engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rlhfctl.config.commands import Bundle
from rlhfctl.config.groups import (AuthArgs, CheckArgs, DataArgs, ModelLoadArgs, RewardExecArgs, RewardModelArgs,
                                   RolloutArgs, RunArgs, ServerArgs)
from rlhfctl.config.reward_groups import SourceGroups
from rlhfctl.config.train_groups import (AgentArgs, EMAArgs, EvalArgs, LoRAArgs, PolicyArgs, PPOArgs, PretrainArgs,
                                         PtxArgs, TrainArgs)


@dataclass(frozen=True)
class SamplingGroups(Bundle):
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


@dataclass(frozen=True)
class PolicyGroups(Bundle):
    """What an actor worker reads: how it samples, how it is trained (LoRA adapters or all weights), the PPO policy
    loss, its weights' moving average (--enable-ema) and the pretraining loss added to it (--pretrain-data)."""

    sampling: SamplingGroups
    train: TrainArgs
    ppo: PPOArgs
    ema: EMAArgs
    ptx: PtxArgs
    lora: LoRAArgs


@dataclass(frozen=True)
class CriticGroups(Bundle):
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
    lora: LoRAArgs


@dataclass(frozen=True)
class ReferenceGroups(Bundle):
    """What the reference worker reads: the policy's initial weights, the rollout forward's batching, and
    --ref-reward-offload; with --lora-path, the adapter the policy starts from (merged into the reference)."""

    model: PretrainArgs
    load: ModelLoadArgs
    train: TrainArgs
    rollout: RolloutArgs
    ref_reward_offload: bool
    lora: LoRAArgs


@dataclass(frozen=True)
class RewardModelGroups(Bundle):
    """What a local reward model worker (--reward-pretrain as a role) reads, and --ref-reward-offload."""

    model: RewardModelArgs
    load: ModelLoadArgs
    ref_reward_offload: bool


@dataclass(frozen=True)
class CheckSampleGroups(Bundle):
    """What check-reward builds its samples from: the dataset, --responses, and for model:DIR how it samples."""

    check: CheckArgs
    data: DataArgs
    model: PretrainArgs
    load: ModelLoadArgs
    rollout: RolloutArgs
    run: RunArgs


@dataclass(frozen=True)
class AppGroups(Bundle):
    """What serve-rm's HTTP app reads: request limits and logging (`server`), the API key, and the reward timeout."""

    server: ServerArgs
    auth: AuthArgs
    execution: RewardExecArgs


@dataclass(frozen=True)
class ServedModelGroups(Bundle):
    """What serve-rm's model process reads (sent to it when it starts): the reward model (--reward-pretrain) or
    judge, the options it is opened with, and its threads and batching window (`server`)."""

    model: RewardModelArgs
    sources: SourceGroups
    server: ServerArgs

    @property
    def judge_model(self) -> Optional[str]:
        return self.sources.judge.judge_model if self.sources.judge is not None else None

    @property
    def name(self) -> str:
        judge = self.judge_model
        return f"judge {judge}" if judge else f"reward model {self.model.reward_pretrain}"

    @property
    def flag(self) -> str:
        """The option that named the model, with its value, for a loading error."""
        judge = self.judge_model
        return f"--judge-model {judge}" if judge else f"--reward-pretrain {self.model.reward_pretrain}"

