"""Open a reward source from what a user typed: reward server URL(s), a reward_func.py, a reward model folder, or
an LLM judge, with the option groups of the command that opens it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rlhfctl.errors import UsageError
from rlhfctl.rewards.base import RewardSource

if TYPE_CHECKING:
    from rlhfctl.config import (FunctionNameArgs, ModelLoadArgs, RewardExecArgs, RewardModelOptions, ServerArgs,
                                ServerBatchArgs)
    from rlhfctl.config.reward_groups import SourceGroups
    from rlhfctl.rewards.pool import FunctionPool
    from rlhfctl.rewards.terms import RewardTerm


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def open_remote(urls: str | list[str], groups: SourceGroups, *, timeout: float | None = None) -> RewardSource:
    """A client of reward server URL(s) with the command's client options, after asking the server once whether
    its rewards may be cached (RemoteReward.probe)."""
    from rlhfctl.rewards.remote import RemoteReward

    if groups.remote is None:
        client = RemoteReward(urls)
    else:
        assert groups.auth is not None, "a command with reward client options has --api-key too"
        client = RemoteReward.from_config(groups.remote, groups.auth, urls, timeout=timeout)
    client.probe()
    return client


def open_reward(spec: str, groups: SourceGroups, *, timeout: float | None = None) -> RewardSource:
    """`spec` is 'http://a/get_reward[,http://b/get_reward]' or 'path/to/reward_func.py' (OpenRLHF's
    --remote_rm_url accepts both); `timeout` overrides --rm-timeout."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if parts and all(is_url(p) for p in parts):
        return open_remote(parts, groups, timeout=timeout)
    if len(parts) == 1 and parts[0].endswith(".py"):
        return open_function(parts[0], groups.execution, groups.function)
    if any(is_url(p) for p in parts):
        raise UsageError(f"{spec!r}: mix of URLs and other text; give URLs only, comma-separated, or one .py file")
    if len(parts) == 1 and Path(parts[0]).is_dir():
        raise UsageError(f"{spec!r} is a folder: a reward model goes in --reward-pretrain, not a reward URL")
    raise UsageError(f"{spec!r} is neither a reward server URL (http://...) nor a reward_func .py file")


def open_function(path: str, execution: RewardExecArgs, function: FunctionNameArgs) -> FunctionPool:
    """A reward_func.py in worker processes (FunctionPool): --reward-timeout, --reward-workers,
    --reward-load-timeout, --reward-func-batching, and --function."""
    from rlhfctl.rewards.pool import FunctionPool

    return FunctionPool(path, function=function.function, timeout=execution.reward_timeout,
                        workers=execution.reward_workers, batching=execution.reward_func_batching,
                        load_timeout=execution.reward_load_timeout)


def open_judge(groups: SourceGroups) -> RewardSource:
    """The LLM judge of --judge-model (JudgeModel, in this process) or --judge-url (ChatJudge, a client)."""
    judge = groups.judge
    assert judge is not None, "only a command with judge options opens a judge"
    if judge.judge_url is not None:
        from rlhfctl.rewards.judge_remote import ChatJudge

        assert groups.remote is not None and groups.auth is not None, "--judge-url needs the reward client options"
        return ChatJudge.from_config(judge, groups.remote, groups.auth)
    from rlhfctl.rewards.judge_model import JudgeModel

    return JudgeModel.from_config(judge, groups.loading, batching=groups.batching, server=groups.server)


def open_reward_model(folder: str, loading: ModelLoadArgs, options: RewardModelOptions, *,
                      batching: ServerBatchArgs | None = None, server: ServerArgs | None = None) -> RewardSource:
    """An in-process reward model from `folder` (--reward-pretrain, or a model named in --reward) and the model
    options: a ModelReward, or a PairwiseReward over one with --pairwise."""
    from rlhfctl.rewards.model import ModelReward

    model = ModelReward.from_config(folder, loading, options, batching=batching, server=server)
    if not options.pairwise:
        return model
    from rlhfctl.rewards.pairwise import PairwiseReward

    return PairwiseReward(model, template=options.pairwise_template, score=options.pairwise_score)


def open_term(name: str, source: str, groups: SourceGroups) -> RewardSource:
    """One SOURCE of --reward: reward server URL(s), a reward_func.py, a built-in verifier (VerifierArgs), the code
    sandbox (SandboxArgs), `judge`, or a model folder / Hub ID (--trust-remote-code is checked and announced here)."""
    from rlhfctl.rewards.terms import source_kind

    kind = source_kind(source)
    if kind == "url":
        return open_remote(source, groups)
    if kind == "function":
        return open_function(source, groups.execution, groups.function)
    if kind == "verifier":
        from rlhfctl.rewards.verifier_source import open_verifier

        assert groups.verifier is not None  # every command has VerifierArgs
        return open_verifier(source.strip(), groups.verifier)
    if kind == "sandbox":
        from rlhfctl.rewards.sandbox import open_sandbox

        assert groups.sandbox is not None
        return open_sandbox(groups.sandbox)
    if kind == "judge":
        if groups.judge is None:
            raise UsageError(f"--reward {name}=judge: this command has no LLM judge options")
        return open_judge(groups)
    from rlhfctl.hub import resolve
    from rlhfctl.models.remote_code import announce

    folder = resolve(source, flag=f"--reward {name}=", revision=groups.loading.revision)
    announce(folder, groups.model.trust_remote_code, flag=f"--reward {name}=")
    return open_reward_model(folder, groups.loading, groups.model, batching=groups.batching, server=groups.server)


def open_combined(terms: dict[str, RewardTerm], groups: SourceGroups) -> RewardSource:
    """The weighted sum of --reward's named sources; a source that cannot be opened is named in the error, and the
    ones opened before it are closed."""
    from rlhfctl.errors import RlhfctlError
    from rlhfctl.rewards.combined import CombinedReward

    opened: list[tuple[str, float, RewardSource]] = []
    try:
        for name, term in terms.items():
            try:
                opened.append((name, term.weight, open_term(name, term.source, groups)))
            except RlhfctlError as exc:
                message = str(exc) if str(exc).startswith("--reward ") else f"--reward {name}={term.source}: {exc}"
                exc.args = (message,)
                raise
    except BaseException:
        for _, _, source in opened:
            source.close()
        raise
    return CombinedReward(opened)
