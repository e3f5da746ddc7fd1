"""What serve-rm (and bench-rm --in-process) scores with, opened in this process: a reward model or judge, a
reward_func.py in worker processes, or a combined reward."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhfctl.config.reward_groups import SourceGroups

from rlhfctl.config.slices import ServedModelGroups

if TYPE_CHECKING:
    from rlhfctl.config import ServeRMConfig
    from rlhfctl.rewards.base import RewardSource


def open_model(served: ServedModelGroups) -> RewardSource:
    """The model of --judge-model/--judge-url (JudgeModel, ChatJudge) or --reward-pretrain (ModelReward or
    PairwiseReward), in this process."""
    from rlhfctl.rewards.factory import open_judge, open_reward_model

    groups = served.sources
    if groups.judge is not None and groups.judge.judge is not None:
        return open_judge(groups)
    assert served.model.reward_pretrain is not None
    return open_reward_model(served.model.reward_pretrain, groups.loading, groups.model, batching=groups.batching,
                             server=groups.server)


def open_source(cfg: ServeRMConfig) -> RewardSource:
    """The reward source that --reward-func (FunctionPool: in --reward-workers worker processes), --reward
    (CombinedReward), a judge or --reward-pretrain names, in this process."""
    from rlhfctl.models.remote_code import announce
    from rlhfctl.rewards.factory import open_combined, open_function

    groups = SourceGroups.of(cfg)
    if cfg.reward_func is not None:
        return open_function(cfg.reward_func, groups.execution, groups.function)
    if cfg.reward is not None:
        return open_combined(cfg.reward, groups)
    if cfg.judge is None:
        announce(cfg.reward_pretrain, cfg.trust_remote_code)
    return open_model(ServedModelGroups.of(cfg))
