"""Returns a torch tensor, OpenRLHF's original contract."""

import torch


def reward_func(queries, prompts, labels):
    return torch.tensor([float(q.strip().endswith(label.strip())) for q, label in zip(queries, labels)])
