"""Cross-field checks of what the actor adds to the PPO loss: PPO-ptx (--pretrain-data with --ptx-coef).
rules.py adds these to train-ppo's problems and unused options."""

from __future__ import annotations

from rlhfctl.config.fields import flag_name
from rlhfctl.config.train_groups import PtxArgs


def ptx_problems(ptx: PtxArgs) -> list[str]:
    """--ptx-coef weighs the language-model loss on --pretrain-data: the data's options without the data, or the
    data with a weight of 0, would train nothing on it (OpenRLHF's default --ptx_coef alone: ptx_unused warns)."""
    fields = PtxArgs.model_fields
    if ptx.pretrain_data is None:
        return [f"{flag_name(name, fields[name])} has no effect without --pretrain-data" for name in fields
                if getattr(ptx, name) not in (fields[name].default, *((0.0,) if name == "ptx_coef" else ()))]
    if ptx.ptx_coef == 0:
        return ["--pretrain-data with --ptx-coef 0 adds nothing to the actor loss: give --ptx-coef > 0 (OpenRLHF's "
                "default is 0.05)"]
    return []


def ptx_unused(ptx: PtxArgs) -> list[tuple[set[str], str]]:
    if ptx.pretrain_data is not None:
        return []
    return [({"ptx_coef"}, "weighs the language-model loss on --pretrain-data, which is not given: no ptx loss is "
                           "added")]
