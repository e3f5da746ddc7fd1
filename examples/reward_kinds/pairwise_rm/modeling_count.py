"""A reward model that counts one token (rlhfctl.models.tiny_kinds): custom code loaded by auto_map."""
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
