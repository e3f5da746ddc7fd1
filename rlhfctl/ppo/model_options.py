"""What --load-in-4bit and --ref-reward-offload do to each role of a train-ppo run, said before any model loads.

4-bit (NF4, bitsandbytes, a CUDA GPU): the frozen roles (reference, local reward model) load in 4 bits. The trained
roles (actor, critic) cannot: bitsandbytes' 4-bit weights take no gradient, and OpenRLHF trains them through LoRA
adapters (QLoRA, --lora_rank), which rlhfctl does not have; they load in bf16/fp32 and the run says so.
Offload: the frozen roles keep their weights in CPU memory between calls (models/offload.py).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from rlhfctl.errors import UsageError

if TYPE_CHECKING:
    from rlhfctl.config import ModelLoadArgs, PlacementArgs

FROZEN = ("ref", "reward")
TRAINED = ("actor", "critic")
ROLE_NAMES = {"actor": "actor", "ref": "reference model", "critic": "critic", "reward": "reward model"}


def _names(roles: list[str]) -> str:
    names = [ROLE_NAMES[r] for r in roles]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def check_four_bit(load: ModelLoadArgs, roles: list[str], has_gpus: bool, where: str) -> None:
    """Refuse --load-in-4bit where no role can honour it (exit 2); else say which roles load in full precision.

    `where` names what has no GPU in the message ("this machine", "the Ray cluster")."""
    if not load.load_in_4bit:
        return
    frozen = [r for r in roles if r in FROZEN]
    trained = [r for r in roles if r in TRAINED]
    no_lora = ("training 4-bit weights needs LoRA adapters (QLoRA, OpenRLHF's --lora_rank), which rlhfctl does not "
               "have")
    if not frozen:
        raise UsageError(f"--load-in-4bit: every model of this run is trained (the {_names(trained)}), and "
                         f"{no_lora}; drop --load-in-4bit (--bf16 halves memory instead)")
    if not has_gpus:
        raise UsageError(f"--load-in-4bit: the {_names(frozen)} would load in 4 bits with bitsandbytes, which needs "
                         f"a CUDA GPU, and {where} has none (the {_names(trained)} never would: {no_lora}); drop "
                         "--load-in-4bit (--bf16 halves memory instead)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UsageError("--load-in-4bit needs the bitsandbytes package: pip install bitsandbytes") from None
    warnings.warn(f"--load-in-4bit: the {_names(frozen)} load in 4 bits; the {_names(trained)} load in "
                  f"{'bf16' if load.bf16 else 'fp32'}, since {no_lora}", stacklevel=2)


def note_offload(placement: PlacementArgs, load: ModelLoadArgs, roles: list[str], has_gpus: bool) -> None:
    """Say once, at start, when --ref-reward-offload has nothing to do in this run, and why."""
    if not placement.ref_reward_offload:
        return
    frozen = [r for r in roles if r in FROZEN]
    if not frozen:
        warnings.warn("--ref-reward-offload: this run has no reference model (--init-kl-coef 0) and no local reward "
                      "model (--reward-pretrain without --remote-rm-url), so there is nothing to offload", stacklevel=2)
    elif not has_gpus:
        warnings.warn(f"--ref-reward-offload: there is no GPU in this run, so the {_names(frozen)} already live in "
                      "CPU memory and offloading has nothing to move (their weights are still moved to the CPU "
                      "after each use, which here is no move at all)", stacklevel=2)
    elif load.load_in_4bit:
        warnings.warn(f"--ref-reward-offload: 4-bit weights cannot be moved off the GPU (bitsandbytes), so the "
                      f"{_names(frozen)} stay on their GPU", stacklevel=2)
