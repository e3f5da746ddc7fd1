"""What --load-in-4bit and --ref-reward-offload do to each role of a train-ppo run, said before any model loads.

4-bit (NF4, bitsandbytes, a CUDA GPU): the frozen roles (reference, local reward model) load in 4 bits, and so do
the bases of the trained roles that train LoRA adapters (QLoRA: --lora-rank; the critic with --lora-rank > 0).
A trained role without adapters cannot: bitsandbytes' 4-bit weights take no gradient, so it loads in bf16/fp32 and
the run says so.
Offload: the frozen roles keep their weights in CPU memory between calls (models/offload.py).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from rlhfctl.errors import UsageError

if TYPE_CHECKING:
    from rlhfctl.config import LoRAArgs, ModelLoadArgs, PlacementArgs

FROZEN = ("ref", "reward")
TRAINED = ("actor", "critic")
ROLE_NAMES = {"actor": "actor", "ref": "reference model", "critic": "critic", "reward": "reward model"}


def _names(roles: list[str]) -> str:
    names = [ROLE_NAMES[r] for r in roles]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def four_bit_roles(roles: list[str], lora: LoRAArgs) -> list[str]:
    """The roles --load-in-4bit loads in 4 bits: the frozen ones, and the trained ones with LoRA adapters."""
    adapters = {"actor": lora.uses_lora, "critic": lora.lora_rank > 0}
    return [r for r in roles if r in FROZEN or adapters.get(r, False)]


def check_four_bit(load: ModelLoadArgs, lora: LoRAArgs, roles: list[str], has_gpus: bool, where: str) -> None:
    """Refuse --load-in-4bit where no role can honour it (exit 2); else say which roles load in full precision.

    `where` names what has no GPU in the message ("this machine", "the Ray cluster")."""
    if not load.load_in_4bit:
        return
    four_bit = four_bit_roles(roles, lora)
    full = [r for r in roles if r in TRAINED and r not in four_bit]
    no_lora = "training 4-bit weights needs LoRA adapters (QLoRA: add --lora-rank N)"
    if not four_bit:
        raise UsageError(f"--load-in-4bit: every model of this run is trained (the {_names(full)}), and "
                         f"{no_lora}; drop --load-in-4bit (--bf16 halves memory instead)")
    if not has_gpus:
        # bitsandbytes 0.50 has CPU kernels for NF4 layers, but rlhfctl's 4-bit path (device map, engines, offload)
        # is built for CUDA only, and the CPU set-up does not install bitsandbytes.
        aside = f" (the {_names(full)} would not: {no_lora})" if full else ""
        raise UsageError(f"--load-in-4bit: the {_names(four_bit)} would load in 4 bits with bitsandbytes, which "
                         f"rlhfctl runs on a CUDA GPU only, and {where} has none{aside}; drop --load-in-4bit "
                         "(--bf16 halves memory instead)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UsageError("--load-in-4bit needs the bitsandbytes package: pip install bitsandbytes") from None
    if full:
        warnings.warn(f"--load-in-4bit: the {_names(four_bit)} load in 4 bits; the {_names(full)} load in "
                      f"{'bf16' if load.bf16 else 'fp32'}, since {no_lora}", stacklevel=2)


def note_offload(placement: PlacementArgs, load: ModelLoadArgs, roles: list[str], has_gpus: bool) -> None:
    """Say once, at start, when --ref-reward-offload has nothing to do in this run, and why."""
    if not placement.ref_reward_offload:
        return
    frozen = [r for r in roles if r in FROZEN]
    if not frozen:
        warnings.warn("--ref-reward-offload: this run has no reference model of its own (--init-kl-coef 0, or LoRA, "
                      "whose reference is the actor's base) and no local reward model (--reward-pretrain without "
                      "--remote-rm-url), so there is nothing to offload", stacklevel=2)
    elif not has_gpus:
        warnings.warn(f"--ref-reward-offload: there is no GPU in this run, so the {_names(frozen)} already live in "
                      "CPU memory and offloading has nothing to move (their weights are still moved to the CPU "
                      "after each use, which here is no move at all)", stacklevel=2)
    elif load.load_in_4bit:
        warnings.warn(f"--ref-reward-offload: 4-bit weights cannot be moved off the GPU (bitsandbytes), so the "
                      f"{_names(frozen)} stay on their GPU", stacklevel=2)
