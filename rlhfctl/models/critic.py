"""The critic: a base transformer with a scalar value head on every token, V(s_t) for GAE.

Initialised as OpenRLHF does: from --critic-pretrain, else --reward-pretrain, else --pretrain. A reward model
(Hugging Face *ForSequenceClassification, or OpenRLHF's base + `{value_head_prefix}` layout) lends its head, so the
critic starts out predicting the reward; a causal LM gets a fresh head. Saved in the *ForSequenceClassification
layout (base + `score`), which AutoModelForSequenceClassification and serve-rm both load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from rlhfctl.errors import ConfigError

from rlhfctl.models.actor import attn_implementation, position_ids
from rlhfctl.models.quiet import quiet_transformers

if TYPE_CHECKING:
    from rlhfctl.models.ring_attention import RingGroup


def critic_source(critic_pretrain: str | None, reward_pretrain: str | None, pretrain: str | None) -> str:
    """The folder a critic starts from, in OpenRLHF's order of preference (checked to exist)."""
    for flag, source in (("--critic-pretrain", critic_pretrain), ("--reward-pretrain", reward_pretrain),
                         ("--pretrain", pretrain)):
        if source is not None:
            if not Path(source).is_dir():
                raise ConfigError(f"{flag} {source}: no such folder (the critic starts from it; a local Hugging "
                                  "Face model folder is needed)")
            return source
    raise ConfigError("a critic needs --critic-pretrain, --reward-pretrain or --pretrain")


def _read_tensor(folder: Path, key: str) -> Tensor | None:
    """One tensor from a model folder's safetensors (single file or sharded), or None if absent."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shard = json.loads(index.read_text())["weight_map"].get(key)
        files = [folder / shard] if shard else []
    else:
        files = [folder / "model.safetensors"] if (folder / "model.safetensors").is_file() else []
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            if key in f.keys():
                return f.get_tensor(key)
    return None


class Critic(nn.Module):
    """V(s_t) for each response position: `forward(sequences, attention_mask, num_actions) -> [B, num_actions]`."""

    def __init__(self, backbone: nn.Module, value_head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.value_head = value_head
        self.config = backbone.config

    @classmethod
    def from_pretrained(cls, path: str, *, value_head_prefix: str | None = None, bf16: bool = False,
                        flash_attn: bool = False, gradient_checkpointing: bool = False,
                        load_in_4bit: bool = False) -> "Critic":
        """`load_in_4bit`: a 4-bit base (QLoRA, a CUDA GPU), for a critic that trains LoRA adapters."""
        from transformers import AutoModel

        from rlhfctl.models.reward import four_bit_kwargs

        quiet_transformers()
        folder = Path(path)
        if not folder.is_dir():
            from rlhfctl.hub import missing_folder

            raise ConfigError(f"critic folder {path}: {missing_folder(path)}")
        dtype = torch.bfloat16 if bf16 else torch.float32
        backbone = AutoModel.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation(flash_attn),
                                             **(four_bit_kwargs(dtype) if load_in_4bit else {}))
        if gradient_checkpointing:
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        hidden = backbone.config.hidden_size
        head = nn.Linear(hidden, 1, bias=False, dtype=dtype)
        prefix = value_head_prefix or getattr(backbone.config, "value_head_prefix", None) or "score"
        weight = _read_tensor(folder, f"{prefix}.weight")
        with torch.no_grad():
            if weight is not None and weight.shape == head.weight.shape:
                head.weight.copy_(weight)
            else:  # a causal LM: a fresh head, initialised as OpenRLHF's value head
                nn.init.normal_(head.weight, std=1.0 / (hidden + 1))
        return cls(backbone, head)

    def forward(self, sequences: Tensor, attention_mask: Tensor, num_actions: int, packed: bool = False,
                ring: RingGroup | None = None) -> Tensor:
        """`packed`: the rows run as one packed row without padding (--packing-samples); the same values, 0 on
        response padding. With `ring`, this worker's share of that row (--ring-attn-size), the ring's values
        gathered."""
        if packed:
            from rlhfctl.models import packing

            rows = packing.pack(sequences, attention_mask, num_actions)
            if ring is not None:
                from rlhfctl.models.packing import ring_forward

                out, part = ring_forward(self.backbone, rows, ring)
                local = self.value_head(out.last_hidden_state[0]).squeeze(-1).float()
                values = packing.gather_actions(part.gather_tokens(local).unsqueeze(0), rows)
                return packing.scatter_actions(values, rows)
            hidden = self.backbone(**packing.forward_kwargs(self.backbone, rows)).last_hidden_state
            values = self.value_head(packing.gather_actions(hidden, rows)).squeeze(-1).float()
            return packing.scatter_actions(values, rows)
        hidden = self.backbone(sequences, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                               use_cache=False).last_hidden_state
        values = self.value_head(hidden).squeeze(-1).float()
        # The value of the state before action t is read at the token before it, as for the log-probs.
        return values[:, -num_actions - 1:-1]

    def save_pretrained(self, out_dir: str | Path, state_dict: dict[str, Tensor] | None = None) -> None:
        """Write the *ForSequenceClassification layout: `{base_model_prefix}.*` + `score.weight`, num_labels=1."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = state_dict if state_dict is not None else self.state_dict()
        prefix = getattr(self.backbone, "base_model_prefix", "model") or "model"
        tensors = {}
        for key, value in state.items():
            if key.startswith("backbone."):
                tensors[f"{prefix}.{key[len('backbone.'):]}"] = value.detach().contiguous().cpu()
            elif key == "value_head.weight":
                tensors["score.weight"] = value.detach().contiguous().cpu()
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        config = self.backbone.config.__class__.from_dict(self.backbone.config.to_dict())
        config.num_labels = 1
        config.value_head_prefix = "score"
        config.architectures = [type(self.backbone).__name__.replace("Model", "ForSequenceClassification")]
        config.save_pretrained(out)
