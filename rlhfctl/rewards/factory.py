"""Open a reward source from what a user typed: reward server URL(s), a reward_func.py, or a reward model folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rlhfctl.errors import UsageError
from rlhfctl.rewards.base import RewardSource

if TYPE_CHECKING:
    from rlhfctl.config import JudgeArgs, RemoteRewardArgs, RewardExecArgs, RewardModelOptions
    from rlhfctl.rewards.terms import RewardTerm
    from rlhfctl.rewards.pool import FunctionPool


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def open_reward(spec: str, cfg: RemoteRewardArgs, *, timeout: float | None = None) -> RewardSource:
    """`spec` is 'http://a/get_reward[,http://b/get_reward]' or 'path/to/reward_func.py' (OpenRLHF's
    --remote_rm_url accepts both). Client options come from cfg's RemoteRewardArgs/AuthArgs fields, a function's
    from its RewardExecArgs/FunctionNameArgs (train-ppo's and check-reward's configs have all four groups)."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if parts and all(is_url(p) for p in parts):
        from rlhfctl.rewards.remote import RemoteReward

        return RemoteReward.from_config(cfg, parts, timeout=timeout)
    if len(parts) == 1 and parts[0].endswith(".py"):
        return open_function(parts[0], cfg)
    if any(is_url(p) for p in parts):
        raise UsageError(f"{spec!r}: mix of URLs and other text; give URLs only, comma-separated, or one .py file")
    if len(parts) == 1 and Path(parts[0]).is_dir():
        raise UsageError(f"{spec!r} is a folder: a reward model goes in --reward-pretrain, not a reward URL")
    raise UsageError(f"{spec!r} is neither a reward server URL (http://...) nor a reward_func .py file")


def open_function(path: str, cfg: RewardExecArgs) -> FunctionPool:
    """A reward_func.py in worker processes (FunctionPool) with the RewardExecArgs of `cfg`: --reward-timeout,
    --reward-workers, --reward-load-timeout, --reward-func-batching, and --function."""
    from rlhfctl.rewards.pool import FunctionPool

    return FunctionPool(path, function=cfg.function, timeout=cfg.reward_timeout, workers=cfg.reward_workers,
                        batching=cfg.reward_func_batching, load_timeout=cfg.reward_load_timeout)


def open_judge(cfg: JudgeArgs) -> RewardSource:
    """The LLM judge of --judge-model (JudgeModel, in this process) or --judge-url (ChatJudge, a client)."""
    if cfg.judge_url is not None:
        from rlhfctl.rewards.judge_remote import ChatJudge

        return ChatJudge.from_config(cfg)
    from rlhfctl.models.judge import JudgeModel

    return JudgeModel.from_config(cfg)


def open_reward_model(cfg: RewardModelOptions, folder: str | None = None) -> RewardSource:
    """An in-process reward model from --reward-pretrain (or `folder`) and the model options: a ModelReward, or a
    PairwiseReward over one with --pairwise."""
    from rlhfctl.rewards.model import ModelReward

    model = ModelReward.from_config(cfg, folder)
    if not cfg.pairwise:
        return model
    from rlhfctl.rewards.pairwise import PairwiseReward

    return PairwiseReward(model, template=cfg.pairwise_template, score=cfg.pairwise_score)


def open_term(name: str, source: str, cfg: RewardModelOptions) -> RewardSource:
    """One SOURCE of --reward: reward server URL(s) (client options from cfg where it has them, else their
    defaults: serve-rm's own --api-key is not sent upstream), a reward_func.py, a built-in verifier (VerifierArgs),
    the code sandbox (SandboxArgs), or a model folder / Hub ID (the
    model options of cfg; --trust-remote-code is checked and announced here)."""
    from rlhfctl.config import JudgeArgs, RemoteRewardArgs
    from rlhfctl.rewards.terms import source_kind

    kind = source_kind(source)
    if kind == "url":
        from rlhfctl.rewards.remote import RemoteReward

        if isinstance(cfg, RemoteRewardArgs):
            return RemoteReward.from_config(cfg, source)
        return RemoteReward(source)
    if kind == "function":
        return open_function(source, cfg)  # type: ignore[arg-type]
    if kind == "verifier":
        from rlhfctl.rewards.verifier_source import open_verifier

        return open_verifier(source.strip(), cfg)  # type: ignore[arg-type]
    if kind == "sandbox":
        from rlhfctl.rewards.sandbox import open_sandbox

        return open_sandbox(cfg)  # type: ignore[arg-type]
    if kind == "judge":
        if not isinstance(cfg, JudgeArgs):
            raise UsageError(f"--reward {name}=judge: this command has no LLM judge options")
        return open_judge(cfg)
    from rlhfctl.hub import resolve
    from rlhfctl.models.remote_code import announce

    folder = resolve(source, flag=f"--reward {name}=", revision=getattr(cfg, "revision", None))
    announce(folder, cfg.trust_remote_code, flag=f"--reward {name}=")
    return open_reward_model(cfg, folder)


def open_combined(terms: dict[str, RewardTerm], cfg: RewardModelOptions) -> RewardSource:
    """The weighted sum of --reward's named sources; a source that cannot be opened is named in the error, and the
    ones opened before it are closed."""
    from rlhfctl.errors import RlhfctlError
    from rlhfctl.rewards.combined import CombinedReward

    opened: list[tuple[str, float, RewardSource]] = []
    try:
        for name, term in terms.items():
            try:
                opened.append((name, term.weight, open_term(name, term.source, cfg)))
            except RlhfctlError as exc:
                message = str(exc) if str(exc).startswith("--reward ") else f"--reward {name}={term.source}: {exc}"
                exc.args = (message,)
                raise
    except BaseException:
        for _, _, source in opened:
            source.close()
        raise
    return CombinedReward(opened)
