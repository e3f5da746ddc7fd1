"""The option groups a reward source is opened with, taken from whichever command opens it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rlhfctl.config.commands import Bundle
from rlhfctl.config.groups import (AuthArgs, FunctionNameArgs, JudgeArgs, ModelLoadArgs, RemoteRewardArgs,
                                   RewardExecArgs, RewardModelOptions, ServerArgs, ServerBatchArgs)
from rlhfctl.config.verify_groups import SandboxArgs, VerifierArgs


@dataclass(frozen=True)
class SourceGroups(Bundle):
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
