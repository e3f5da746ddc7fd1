"""Load a reward model from a local Hugging Face folder, in either layout a reward server meets.

Both layouts are a base transformer plus a linear head of one output, so both load the same way: the base through
`AutoModel` (Hugging Face strips the `model.` prefix), the head's weights read from the checkpoint by name.

- `*ForSequenceClassification` with one label: the head is `score`.
- OpenRLHF's layout: the head is `--value-head-prefix`, else `value_head_prefix` in config.json, else the one
  `[1, hidden]` weight outside the base model.

The reward is read from the head at the last non-pad token, found from the attention mask. We do not call the
sequence-classification forward: it looks for the last token that differs from `pad_token_id`, so when pad and eos
share an id (common) it skips the eos we append, and with no pad id it refuses batches. Batches are padded on the
right, so every position a text's reward depends on sees exactly what it sees when scored alone.

`(r - mean) / std` comes from config.json as plain numbers, not from buffers a newer transformers may leave
uninitialised (the garbage users report from OpenRLHF's normalisation).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhfctl.errors import UsageError
from rlhfctl.models.quiet import quiet_transformers

log = logging.getLogger(__name__)
_warned: set[str] = set()


class RewardModel(nn.Module):
    """Base transformer + linear head read at each text's last attention-mask position, optionally normalised."""

    def __init__(self, base: nn.Module, head: nn.Linear, *, mean: float = 0.0, std: float = 1.0,
                 normalize: bool = False) -> None:
        super().__init__()
        self.base = base
        self.head = head
        self.mean, self.std, self.normalize = float(mean), float(std), bool(normalize)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One reward per row, float32, shape (batch,)."""
        hidden = self.base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        width = attention_mask.size(1)
        last = width - 1 - attention_mask.long().fliplr().argmax(dim=1)
        pooled = hidden[torch.arange(hidden.size(0), device=hidden.device), last]
        rewards = self.head(pooled.to(self.head.weight.dtype)).squeeze(-1).float()
        if self.normalize:
            rewards = (rewards - self.mean) / self.std
        return rewards


def load_reward_model(
    path: str | Path,
    *,
    value_head_prefix: str | None = None,
    normalize_reward: bool = False,
    bf16: bool = False,
    flash_attn: bool = False,
    load_in_4bit: bool = False,
    disable_fast_tokenizer: bool = False,
    trust_remote_code: bool = False,
    reward_output: str | None = None,
) -> tuple[nn.Module, Any]:
    """The model (eval mode, on the GPU if there is one) and its tokenizer (right padding, left truncation).

    A folder with its own code (config.json auto_map), or any model with --reward-output, is run whole and read
    from that output field (models/output_reward.py); else the base model + value head below."""
    from rlhfctl.models.remote_code import check_trust, model_auto_map

    folder = Path(path)
    config = read_config(folder)
    custom = check_trust(folder, trust_remote_code)
    if custom or reward_output is not None:
        from rlhfctl.models.output_reward import load_output_model

        mean, std = reward_normalisation(folder, config, normalize_reward)
        dtype = torch.bfloat16 if bf16 else torch.float32
        kwargs: dict[str, Any] = {"dtype": dtype}
        if flash_attn:  # else the model's own default: custom code may not take an attention choice
            kwargs["attn_implementation"] = _attention(flash_attn)
        if load_in_4bit:
            kwargs.update(four_bit_kwargs(dtype))
        output_model = load_output_model(folder, model_auto_map(config), reward_output=reward_output,
                                         trust_remote_code=trust_remote_code, kwargs=kwargs, mean=mean, std=std,
                                         normalize=normalize_reward)
        return output_model, load_tokenizer(folder, use_fast=not disable_fast_tokenizer,
                                            trust_remote_code=trust_remote_code)
    tensors = checkpoint_tensors(folder)
    prefix = _head_prefix(folder, config, tensors, value_head_prefix)
    mean, std = reward_normalisation(folder, config, normalize_reward)
    dtype = torch.bfloat16 if bf16 else torch.float32
    kwargs = {"dtype": dtype, "attn_implementation": _attention(flash_attn)}
    if load_in_4bit:
        kwargs.update(four_bit_kwargs(dtype))
    base = _load_base(folder, kwargs)
    head_weights = read_tensors(folder, tensors, [n for n in (f"{prefix}.weight", f"{prefix}.bias") if n in tensors])
    head = _make_head(head_weights, prefix, base.config.hidden_size, folder)
    device = next(base.parameters()).device
    if not load_in_4bit:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        base.to(device)
    head.to(device=device, dtype=dtype)
    model = RewardModel(base, head, mean=mean, std=std, normalize=normalize_reward).eval()
    model.requires_grad_(False)
    return model, load_tokenizer(folder, use_fast=not disable_fast_tokenizer)


def load_tokenizer(folder: Path, *, use_fast: bool = True, trust_remote_code: bool = False) -> Any:
    """Right padding (positions match scoring alone) and left truncation (the end, where rewards are read, stays)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=use_fast, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--reward-pretrain {folder}: cannot load its tokenizer: {exc}") from None
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # only the attention mask marks padding; the id is irrelevant
    return tokenizer


# ---------------------------------------------------------------------------------------------------- config
def read_config(folder: Path) -> dict[str, Any]:
    """config.json of a --reward-pretrain folder, or a UsageError saying why the folder is not a model."""
    if not folder.is_dir():
        from rlhfctl.hub import missing_folder

        raise UsageError(f"--reward-pretrain {folder}: {missing_folder(folder)}")
    path = folder / "config.json"
    if not path.is_file():
        raise UsageError(f"--reward-pretrain {folder}: no config.json, so it is not a Hugging Face model folder")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON: {exc}") from None


def reward_normalisation(folder: Path, config: dict[str, Any], normalize: bool) -> tuple[float, float]:
    """(mean, std) of --normalize-reward from config.json ((0, 1) without it); a UsageError when they are missing."""
    if not normalize:
        return 0.0, 1.0
    mean, std = config.get("mean"), config.get("std")
    if not isinstance(mean, (int, float)) or not isinstance(std, (int, float)):
        raise UsageError(
            f"--normalize-reward: {folder}/config.json has no numeric 'mean' and 'std' (got mean={mean!r}, "
            f"std={std!r}); they are written by reward-model training, or drop --normalize-reward"
        )
    if std <= 0:
        raise UsageError(f"--normalize-reward: {folder}/config.json has std={std}, which must be > 0")
    return float(mean), float(std)


def _head_prefix(folder: Path, config: dict[str, Any], tensors: dict[str, str], given: str | None) -> str:
    """The head's name: the flag, then config.json, then `score` for seqcls, then the one [1, hidden] weight."""
    base_keys = ("model.", "transformer.", "gpt_neox.", "backbone.", "language_model.")
    candidates = [n[: -len(".weight")] for n in tensors if n.endswith(".weight") and not n.startswith(base_keys)
                  and n.count(".") == 1]
    seqcls = any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or [])
    for source, prefix in (("--value-head-prefix", given), ("config.json", config.get("value_head_prefix")),
                           ("a ForSequenceClassification model", "score" if seqcls else None)):
        if prefix:
            if f"{prefix}.weight" not in tensors:
                found = ", ".join(candidates) or "none"
                raise UsageError(f"{folder}: value head {prefix!r} (from {source}) is not in the weights "
                                 f"(heads found: {found}); pass --value-head-prefix NAME")
            return prefix
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(candidates) or "none"
    raise UsageError(f"{folder}: cannot tell which weight is the value head (candidates: {found}); "
                     "pass --value-head-prefix NAME")


def _make_head(weights: dict[str, torch.Tensor], prefix: str, hidden: int, folder: Path) -> nn.Linear:
    weight = weights[f"{prefix}.weight"]
    if weight.dim() != 2 or weight.shape[1] != hidden or weight.shape[0] != 1:
        labels = f"{weight.shape[0]} outputs" if weight.dim() == 2 else f"shape {tuple(weight.shape)}"
        raise UsageError(f"{folder}: head {prefix!r} has {labels}; a reward model has one output per text "
                         f"(a Linear({hidden}, 1))")
    bias = weights.get(f"{prefix}.bias")
    head = nn.Linear(hidden, 1, bias=bias is not None)
    with torch.no_grad():
        head.weight.copy_(weight.float())
        if bias is not None:
            head.bias.copy_(bias.float())
    return head


# ---------------------------------------------------------------------------------------------------- weights
def checkpoint_tensors(folder: Path) -> dict[str, str]:
    """Tensor name -> file holding it, for safetensors or .bin checkpoints, single or sharded."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            return dict(json.loads((folder / index).read_text())["weight_map"])
    if (folder / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            return {name: "model.safetensors" for name in f.keys()}
    if (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="meta", weights_only=True)
        return {name: "pytorch_model.bin" for name in state}
    raise UsageError(f"{folder}: no model weights (model.safetensors or pytorch_model.bin)")


def read_tensors(folder: Path, where: dict[str, str], names: list[str]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name in names:
        file = folder / where[name]
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), "pt") as f:
                out[name] = f.get_tensor(name)
        else:
            out[name] = torch.load(file, map_location="cpu", weights_only=True, mmap=True)[name]
    return out


def _load_base(folder: Path, kwargs: dict[str, Any]) -> nn.Module:
    from transformers import AutoModel

    with quiet_transformers():
        try:
            return AutoModel.from_pretrained(folder, **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            raise UsageError(f"--reward-pretrain {folder}: cannot load the base model: {exc}") from None


# ---------------------------------------------------------------------------------------------------- options
def _attention(flash_attn: bool) -> str:
    if not flash_attn:
        return "sdpa"
    try:
        import flash_attn as _  # noqa: F401

        if torch.cuda.is_available():
            return "flash_attention_2"
        why = "there is no CUDA GPU"
    except ImportError:
        why = "the flash-attn package is not installed"
    if "flash" not in _warned:
        _warned.add("flash")
        log.warning("--flash-attn: %s; using sdpa attention instead", why)
    return "sdpa"


def four_bit_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    """from_pretrained arguments that load the weights in 4 bits (NF4, bitsandbytes), for a frozen model."""
    if not torch.cuda.is_available():
        raise UsageError("--load-in-4bit needs bitsandbytes on a CUDA GPU, and this machine has no CUDA GPU; "
                         "drop --load-in-4bit (use --bf16 to halve memory instead)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UsageError("--load-in-4bit needs the bitsandbytes package: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4",
                               bnb_4bit_use_double_quant=True)
    return {"quantization_config": quant, "device_map": "auto"}
