"""What a policy's forward accepts, read from the transformers model under any wrapper (torch.compile, PEFT)."""

from __future__ import annotations

import inspect
from typing import Any


def transformers_model(model: Any) -> Any:
    """The transformers model under a torch.compile wrapper (--torch-compile), a DeepSpeed engine and a PEFT
    wrapper (LoRA)."""
    model = getattr(model, "_orig_mod", model)
    if type(model).__name__ == "DeepSpeedEngine":  # named, not imported: deepspeed is a heavy import
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def takes(model: Any, argument: str) -> bool:
    """The model's forward names `argument` (a PEFT wrapper passes its keywords to the base model)."""
    return argument in inspect.signature(transformers_model(model).forward).parameters


def takes_logits_to_keep(model: Any) -> bool:
    """The forward computes logits for the last N positions only when asked (`logits_to_keep`, as transformers'
    causal LMs do): the head and its backward then skip the prompt."""
    return takes(model, "logits_to_keep")
