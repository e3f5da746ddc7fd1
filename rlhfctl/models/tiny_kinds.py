"""Tiny reward models of the kinds that need their own code, built offline: a custom-code reward model (config.json
auto_map -> modeling_count.py in the folder, as ArmoRM's) and a pairwise comparison model (PairRM-style).

Both count one character, so their rewards are known exactly: the reward model returns `score` = count of
`count_char` in the text (and `rewards` = [count, -count]); the pairwise model returns the logit of P(A beats B) =
count in response A - count in response B, where A is the text between the template's "A" and "B" markers
(uppercase, so prompts and responses must be lowercase). For tests, examples and smoke runs; the code is written
into the folder, as a Hub model ships it, and runs only with --trust-remote-code.
"""

from __future__ import annotations

import importlib.util
import json
import string
import sys
from pathlib import Path

from rlhfctl.models.quiet import quiet_transformers

MODELING = '''"""A reward model that counts one token (rlhfctl.models.tiny_kinds): custom code loaded by auto_map."""
from dataclasses import dataclass
from typing import Optional

import torch
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput


class CountConfig(PretrainedConfig):
    model_type = "rlhfctl_count"

    def __init__(self, count_id=0, a_id=0, b_id=0, pairwise=False, **kwargs):
        super().__init__(**kwargs)
        self.count_id, self.a_id, self.b_id, self.pairwise = count_id, a_id, b_id, pairwise


@dataclass
class CountOutput(ModelOutput):
    score: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    rewards: Optional[torch.FloatTensor] = None


class CountModel(PreTrainedModel):
    config_class = CountConfig

    def __init__(self, config):
        super().__init__(config)
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.post_init()

    def _init_weights(self, module):
        pass

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        hit = (input_ids == self.config.count_id) & mask
        if self.config.pairwise:
            pos = torch.arange(input_ids.size(1), device=input_ids.device)[None]
            a = (input_ids == self.config.a_id).long().argmax(1, keepdim=True)
            b = (input_ids == self.config.b_id).long().argmax(1, keepdim=True)
            value = (hit & (pos > a) & (pos < b)).sum(1) - (hit & (pos > b)).sum(1)
        else:
            value = hit.sum(1)
        value = self.scale * value.float()
        return CountOutput(score=value, logits=value[:, None], rewards=torch.stack([value, -value], 1))
'''

ALPHABET = string.ascii_lowercase + string.digits + " ?+-*=.,:!'\n[]|AB"


def _module(folder: Path):  # noqa: ANN202 (a module written at run time)
    spec = importlib.util.spec_from_file_location(f"rlhfctl_count_{abs(hash(str(folder)))}",
                                                  folder / "modeling_count.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def make_count_model(out_dir: str | Path, *, count_char: str = "x", pairwise: bool = False) -> Path:
    """Save the counting model with its code and a character tokenizer into `out_dir`; return the path."""
    from rlhfctl.models.tiny import build_char_tokenizer

    if count_char not in ALPHABET or count_char in "AB":
        raise ValueError(f"count_char must be one of the lowercase alphabet, not {count_char!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "modeling_count.py").write_text(MODELING)
    tokenizer = build_char_tokenizer(ALPHABET)
    ids = tokenizer.convert_tokens_to_ids([count_char, "A", "B"])
    module = _module(out)
    config = module.CountConfig(count_id=ids[0], a_id=ids[1], b_id=ids[2], pairwise=pairwise,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    with quiet_transformers():
        module.CountModel(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    path = out / "config.json"
    data = json.loads(path.read_text())
    data["auto_map"] = {"AutoConfig": "modeling_count.CountConfig",
                        "AutoModelForSequenceClassification": "modeling_count.CountModel"}
    data["architectures"] = ["CountModel"]
    path.write_text(json.dumps(data, indent=2))
    return out
