"""LoRA adapters (PEFT) on a trained model: adding them, the reference as the base with them off, the merged
weights vLLM receives, and saving as an adapter or as merged weights.

Only the adapter's A and B (and a critic's value head) require gradients, so both training engines give optimizer
state to them alone (they optimise the parameters that require grad). vLLM gets the merged weights, W + B·A x
alpha / r, under the base model's parameter names: PEFT's names (`base_layer`, `lora_A.default`) mean nothing to a
vLLM model (OpenRLHF #1081), and the merge keeps rollout log-probs equal to the actor's. A QLoRA base (4-bit,
bitsandbytes) is dequantised for the merge, so the engines get dense weights either way.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ContextManager

import torch
from torch import Tensor, nn

from rlhfctl.errors import ConfigError

if TYPE_CHECKING:
    from rlhfctl.config import LoRAArgs

ADAPTER_CONFIG = "adapter_config.json"
_PEFT_PREFIX = re.compile(r"(^|\.)base_model\.model\.")  # PeftModel -> LoraModel -> the model it wraps
Gather = Callable[[list[nn.Parameter]], ContextManager[Any]]  # whole parameters inside (ZeRO-3), else a no-op


def _no_gather(params: list[nn.Parameter]) -> ContextManager[Any]:
    return contextlib.nullcontext()


def check_adapter_folder(path: str) -> None:
    """--lora-path must be a PEFT adapter folder; said before any worker starts."""
    if not (Path(path) / ADAPTER_CONFIG).is_file():
        raise ConfigError(f"--lora-path {path}: not a PEFT adapter folder (no {ADAPTER_CONFIG} in it); give the "
                          "folder a LoRA run's --save-path wrote, or peft's save_pretrained")


def add_adapters(model: nn.Module, lora: LoRAArgs, *, gradient_checkpointing: bool = False) -> nn.Module:
    """`model` wrapped by PEFT with a LoRA adapter (fresh, or --lora-path's), only the adapter trainable.

    A 4-bit base (QLoRA) is first prepared as PEFT prescribes: norms in fp32, input gradients on."""
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora.lora_path is not None:
        check_adapter_folder(lora.lora_path)
        return PeftModel.from_pretrained(model, lora.lora_path, is_trainable=True)
    targets = lora.target_modules
    config = LoraConfig(r=lora.lora_rank, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout, bias="none",
                        target_modules=targets[0] if targets == ["all-linear"] else targets)
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # PEFT's "Target modules {...} not found in the base model"
        raise ConfigError(f"--target-modules {','.join(targets)}: {exc}") from None


def with_adapters(model: nn.Module, lora: LoRAArgs, *, gradient_checkpointing: bool = False) -> nn.Module:
    """`model` with LoRA adapters when the run trains them (--lora-rank > 0 or --lora-path), else as it is."""
    return add_adapters(model, lora, gradient_checkpointing=gradient_checkpointing) if lora.uses_lora else model


def merge_adapter(model: nn.Module, path: str) -> nn.Module:
    """`model` with the PEFT adapter at `path` merged into its weights (the policy a --lora-path run starts from)."""
    from peft import PeftModel

    check_adapter_folder(path)
    return PeftModel.from_pretrained(model, path).merge_and_unload()


def is_lora(model: nn.Module) -> bool:
    """A PEFT model (checked without importing peft, which a run without LoRA never loads)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def base_of(model: nn.Module) -> nn.Module:
    """The Hugging Face model under PEFT's wrappers (its config, embeddings, modules), or `model` itself."""
    return model.get_base_model() if is_lora(model) else model


def adapters_off(model: nn.Module) -> ContextManager[Any]:
    """Inside, the model is its base: the reference policy with no second copy of the weights."""
    return model.disable_adapter() if is_lora(model) else contextlib.nullcontext()


@dataclass(frozen=True)
class SyncTensor:
    """One tensor as vLLM (or a plain Hugging Face folder) knows it: its base-model name, dtype and full shape, and
    how to compute it (call inside `gather(params)`)."""

    name: str
    dtype: torch.dtype
    shape: list[int]
    params: list[nn.Parameter]
    value: Callable[[], Tensor]


def full_shape(param: nn.Parameter) -> list[int]:
    state = getattr(param, "quant_state", None)  # a bitsandbytes 4-bit weight is packed; its QuantState knows
    return list(state.shape) if state is not None else list(getattr(param, "ds_shape", param.shape))


def _dtype(param: nn.Parameter) -> torch.dtype:
    state = getattr(param, "quant_state", None)
    return state.dtype if state is not None else param.dtype


def _has_adapters(model: nn.Module) -> bool:
    return any(is_lora(m) for m in model.modules())


def merged_tensors(model: nn.Module) -> list[SyncTensor]:
    """Every parameter of `model` under the name it has without PEFT, the adapted layers' weights with B·A x scale
    added; a model without adapters: its parameters as they are. `model` may be a PEFT model or hold one (the
    critic's backbone).

    The adapter's own tensors are folded in, never listed. Nothing is computed until `value()` is called."""
    if not _has_adapters(model):
        return [SyncTensor(n, p.dtype, full_shape(p), [p], lambda p=p: p.data) for n, p in model.named_parameters()]
    from peft.tuners.lora import LoraLayer
    from peft.utils.integrations import dequantize_module_weight

    layers = {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    out = []
    for name, param in model.named_parameters():
        if ".lora_" in name:
            continue
        owner, _, leaf = name.rpartition(".")
        layer = layers.get(owner.removesuffix(".base_layer")) if owner.endswith(".base_layer") else None
        plain = _PEFT_PREFIX.sub(r"\1", name).replace(".base_layer.", ".")
        if layer is None or leaf != "weight":
            out.append(SyncTensor(plain, _dtype(param), full_shape(param), [param], lambda p=param: p.data))
            continue
        lora_params = [p for n, p in layer.named_parameters() if ".lora_" in f".{n}"]

        def merged(layer: Any = layer, dtype: torch.dtype = _dtype(param)) -> Tensor:
            weight = dequantize_module_weight(layer.get_base_layer()).detach().float()
            for adapter in layer.active_adapters:
                weight = weight + layer.get_delta_weight(adapter).float()
            return weight.to(dtype)

        out.append(SyncTensor(plain, _dtype(param), full_shape(param), [param, *lora_params], merged))
    return out


def merged_state_dict(model: nn.Module, gather: Gather = _no_gather, keep: bool = True) -> dict[str, Tensor]:
    """The merged weights as a CPU state dict of the base model's names (empty where `keep` is False: the ranks
    that only take part in ZeRO-3's gathers)."""
    state = {}
    for t in merged_tensors(model):
        with gather(t.params):
            value = t.value()
            if keep:
                state[t.name] = value.detach().to("cpu", copy=True)
    return state


def save_lora(model: nn.Module, out_dir: str, state: dict[str, Tensor], merged: bool) -> None:
    """Rank 0: `state` (the PEFT model's full state dict) as an adapter folder in PEFT's format, or with `merged`
    (`state` from merged_state_dict) as a plain Hugging Face model folder."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if merged:
        base_of(model).save_pretrained(out_dir, state_dict=state, safe_serialization=True)
    else:
        model.save_pretrained(out_dir, state_dict=state, safe_serialization=True)


def trainable_share(model: nn.Module) -> float:
    """Parameters that take gradients, as a share of all (a 4-bit weight counted at its full size)."""
    total = trained = 0
    for p in model.parameters():
        n = int(torch.Size(full_shape(p)).numel())
        total += n
        trained += n if p.requires_grad else 0
    return trained / max(1, total)
