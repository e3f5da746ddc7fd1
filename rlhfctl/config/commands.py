"""The four command configs: each is the groups it uses, composed (flat flags, one name per option), plus its rules.

A command config is what the CLI builds and --print-config writes. Code below the CLI does not take it whole: it
takes the typed groups it uses, `cfg.slice(TrainArgs)`, so a reader knows from a signature what a function depends on.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable, ClassVar, TypeVar, Union

from pydantic import BaseModel, model_validator

from rlhfctl.config import rules
from rlhfctl.config.fields import Group
from rlhfctl.config.groups import (AuthArgs, BenchArgs, CheckArgs, CombinedRewardArgs, DataArgs, FunctionNameArgs,
                                   JudgeArgs, ListenArgs, ModelLoadArgs, OutputArgs, RemoteRewardArgs,
                                   RewardCacheArgs, RewardExecArgs, RewardFuncArgs, RewardModelArgs,
                                   RewardModelOptions, RolloutArgs, RunArgs, ServeBackendArgs, ServerArgs,
                                   ServerBatchArgs, VLLMEngineArgs)
from rlhfctl.config.train_groups import (AgentArgs, EMAArgs, EvalArgs, LoggingArgs, LoRAArgs, PlacementArgs,
                                         PolicyArgs, PPOArgs, PretrainArgs, PtxArgs, RewardSourceArgs, TrainArgs,
                                         VLLMArgs)
from rlhfctl.config.verify_groups import SandboxArgs, VerifierArgs

G = TypeVar("G", bound=Group)
B = TypeVar("B", bound="Bundle")


# Each command's rules (rules.py), by command name: Command.problems() and .unused() look them up here.
PROBLEMS: dict[str, Callable[[Any], list[str]]] = {
    "serve-rm": rules.serve_rm_problems, "train-ppo": rules.train_ppo_problems,
    "check-reward": rules.check_reward_problems, "bench-rm": rules.bench_rm_problems,
}
UNUSED: dict[str, Callable[[Any], rules.Unused]] = {
    "serve-rm": rules.serve_rm_unused, "train-ppo": rules.train_ppo_unused,
    "check-reward": rules.check_reward_unused, "bench-rm": rules.bench_rm_unused,
}


class Command(BaseModel):
    """What every command config shares: its name, its rules, and typed slices of its groups."""

    name: ClassVar[str]

    def slice(self, group: type[G]) -> G:
        """This config's values of one of its groups, as that group: `fit(train=cfg.slice(TrainArgs))`."""
        if not isinstance(self, group):
            raise TypeError(f"{type(self).__name__} has no {group.__name__}")
        return group.model_construct(_fields_set=self.model_fields_set & set(group.model_fields),
                                     **{name: getattr(self, name) for name in group.model_fields})

    def problems(self) -> list[str]:
        """Every cross-field mistake of this config (rules.py, found by the command's name)."""
        return PROBLEMS[self.name](self)

    def unused(self) -> rules.Unused:
        """Options the chosen mode cannot use, with why (rules.py, found by the command's name)."""
        return UNUSED[self.name](self)

    @model_validator(mode="after")
    def _rules(self) -> "Command":
        problems = self.problems()
        if problems:
            raise ValueError("\n".join(problems))
        return self


class Bundle:
    """A frozen dataclass of typed slices for code that reads several groups (a Ray worker, a server's app).

    `Bundle.of(cfg)` fills each field from its type: a group gets `cfg.slice(group)` (None where the field is
    Optional and cfg's command has no such group), a bundle its own `.of(cfg)`, anything else cfg's option of the
    field's name. So a bundle is declared once, as the fields it holds."""

    @classmethod
    def of(cls: type[B], cfg: Command) -> B:
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            kind, optional = hints[field.name], False
            if typing.get_origin(kind) in (Union, types.UnionType) and type(None) in typing.get_args(kind):
                kind, optional = next(a for a in typing.get_args(kind) if a is not type(None)), True
            if isinstance(kind, type) and issubclass(kind, Group):
                values[field.name] = None if optional and not isinstance(cfg, kind) else cfg.slice(kind)
            elif isinstance(kind, type) and issubclass(kind, Bundle):
                values[field.name] = kind.of(cfg)
            else:
                values[field.name] = getattr(cfg, field.name)
        return cls(**values)


class ServeRMConfig(Command, ModelLoadArgs, RewardModelArgs, RewardFuncArgs, CombinedRewardArgs, FunctionNameArgs,
                    RewardExecArgs, ListenArgs, ServerArgs, ServerBatchArgs, AuthArgs, JudgeArgs, RemoteRewardArgs,
                    VerifierArgs, SandboxArgs, ServeBackendArgs, VLLMEngineArgs):
    """Options of `rlhfctl serve-rm`. RemoteRewardArgs (timeouts, retries) act on a --judge-url only; VLLMEngineArgs
    on --backend vllm only."""

    name: ClassVar[str] = "serve-rm"


class CheckRewardConfig(Command, CheckArgs, CombinedRewardArgs, PretrainArgs, DataArgs, RolloutArgs,
                        FunctionNameArgs, RewardExecArgs, RemoteRewardArgs, AuthArgs, ModelLoadArgs,
                        RewardModelOptions, RunArgs, OutputArgs, AgentArgs, JudgeArgs, VerifierArgs, SandboxArgs):
    """Options of `rlhfctl check-reward`."""

    name: ClassVar[str] = "check-reward"


class BenchRMConfig(Command, BenchArgs, ModelLoadArgs, RewardModelArgs, RewardFuncArgs, CombinedRewardArgs,
                    FunctionNameArgs, RewardExecArgs, ServerArgs, ServerBatchArgs, AuthArgs, RemoteRewardArgs,
                    DataArgs, RunArgs, OutputArgs, VerifierArgs, SandboxArgs):
    """Options of `rlhfctl bench-rm`. The server options apply to the serve-rm it starts itself (on a free loopback
    port, so --host/--port are not offered); with --url the server's own settings apply and they are refused."""

    name: ClassVar[str] = "bench-rm"

    def serve_rm_config(self) -> ServeRMConfig:
        """The serve-rm that bench-rm starts: every option the two commands share, except --host/--port (it listens
        on a free loopback port) and the --rm-* options (bench-rm's own client's; serve-rm's act on a --judge-url
        client, which bench-rm does not start)."""
        skipped = {"host", "port"} | set(RemoteRewardArgs.model_fields)
        shared = {name: getattr(self, name) for name in ServeRMConfig.model_fields
                  if name in type(self).model_fields and name not in skipped}
        return ServeRMConfig.model_validate(shared)


class TrainPPOConfig(Command, PlacementArgs, VLLMArgs, PretrainArgs, PolicyArgs, RewardSourceArgs,
                     CombinedRewardArgs, RewardCacheArgs, FunctionNameArgs, RewardExecArgs, RewardModelArgs,
                     RemoteRewardArgs, AuthArgs, DataArgs, RolloutArgs, TrainArgs, PPOArgs, ModelLoadArgs,
                     LoggingArgs, EvalArgs, RunArgs, AgentArgs, JudgeArgs, VerifierArgs, SandboxArgs, EMAArgs, PtxArgs,
                     LoRAArgs):
    """Options of `rlhfctl train-ppo`."""

    name: ClassVar[str] = "train-ppo"


COMMANDS: dict[str, type[Command]] = {cls.name: cls for cls in (ServeRMConfig, TrainPPOConfig, CheckRewardConfig,
                                                                BenchRMConfig)}
