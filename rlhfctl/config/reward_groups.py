"""The option groups a reward source is opened with, taken from whichever command opens it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, TypeVar

from rlhfctl.config.commands import Command
from rlhfctl.config.fields import Group
from rlhfctl.config.groups import (AuthArgs, FunctionNameArgs, JudgeArgs, ModelLoadArgs, RemoteRewardArgs,
                                   RewardExecArgs, RewardModelOptions, ServerArgs, ServerBatchArgs)
from rlhfctl.config.verify_groups import SandboxArgs, VerifierArgs

G = TypeVar("G", bound=Group)


@dataclass(frozen=True)
class SourceGroups:
    """What opening a reward source reads (rewards/factory.py). A command lacking a group gives None: without
    `remote`/`auth` a server is asked with the client defaults and no key, without `judge` a judge is refused,
    without `batching`/`server` a model scores with serve-rm's default batching."""

    loading: ModelLoadArgs
    model: RewardModelOptions
    execution: RewardExecArgs
    function: FunctionNameArgs
    remote: Optional[RemoteRewardArgs] = None
    auth: Optional[AuthArgs] = None
    judge: Optional[JudgeArgs] = None
    batching: Optional[ServerBatchArgs] = None
    server: Optional[ServerArgs] = None
    verifier: Optional[VerifierArgs] = None
    sandbox: Optional[SandboxArgs] = None

    @classmethod
    def of(cls, cfg: Command) -> "SourceGroups":
        """The slices of `cfg` that a reward source reads, None for the groups its command does not have."""
        def part(group: type[G]) -> Optional[G]:
            return cfg.slice(group) if isinstance(cfg, group) else None

        return cls(cfg.slice(ModelLoadArgs), cfg.slice(RewardModelOptions), cfg.slice(RewardExecArgs),
                   cfg.slice(FunctionNameArgs), remote=part(RemoteRewardArgs), auth=part(AuthArgs),
                   judge=part(JudgeArgs), batching=part(ServerBatchArgs), server=part(ServerArgs),
                   verifier=part(VerifierArgs), sandbox=part(SandboxArgs))
