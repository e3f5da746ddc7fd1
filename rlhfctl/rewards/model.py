"""ModelReward: an in-process reward model, and the pieces serve-rm's dynamic batcher shares with it.

Queries are prepared as OpenRLHF's reward server does (leading/trailing pad and eos stripped, exactly one eos
appended, no other special tokens), cut from the left to `max_len` tokens, then scored in length-sorted batches
under a token budget, so little compute goes to padding.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Any, Sequence

import torch

from rlhfctl.rewards.base import RewardBatch

if TYPE_CHECKING:
    from rlhfctl.config import RewardModelOptions


def plan_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped into forward passes: sorted by length, each at most `batch_size` texts and at most
    `max_batch_tokens` padded tokens (longest x count); a text longer than the budget goes alone."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) >= batch_size or lengths[i] * (len(current) + 1) > max_batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def default_batch_tokens(device: torch.device) -> int:
    """A GPU wants big forward passes. On CPU, CPU time per text is lowest for passes of about 1k tokens and rises
    beyond (activations fall out of the caches): with the models of benchmarks/serve_rm.py, 2 texts of 512 tokens
    cost 8% less each than one at a time, 8 cost 26% more."""
    return 16384 if device.type == "cuda" else 1024


class ModelReward:
    """A reward model scoring texts in-process (RewardSource protocol); also what serve-rm runs.

    `score()` may be called from several threads; forward passes are serialised by a lock.
    """

    cacheable = True  # a text's reward depends on that text alone (tests/test_serve_rm_batcher.py)

    def __init__(self, model: Any, tokenizer: Any, *, max_len: int = 2048, batch_size: int = 16,
                 max_batch_tokens: int | None = None, name: str = "reward model") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens or default_batch_tokens(model.device)
        self.name = name
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos = tokenizer.eos_token or ""
        edges = "|".join(re.escape(t) for t in {tokenizer.pad_token, tokenizer.eos_token} if t)
        self._lead = re.compile(f"^(?:{edges})+") if edges else None
        self._trail = re.compile(f"(?:{edges})+$") if edges else None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: RewardModelOptions, folder: str | None = None) -> "ModelReward":
        """From --reward-pretrain and the model-loading options of a command's config (serve-rm, bench-rm,
        train-ppo: each has RewardModelArgs and ModelLoadArgs), or `folder` (a model named in --reward) with those
        options. train-ppo's reward role has no serve-rm batching options, and scores with serve-rm's defaults."""
        from rlhfctl.config import ModelLoadArgs, ServerArgs, ServerBatchArgs
        from rlhfctl.models.reward import load_reward_model

        assert isinstance(cfg, ModelLoadArgs), type(cfg)
        folder = folder or getattr(cfg, "reward_pretrain", None)
        model, tokenizer = load_reward_model(
            folder, value_head_prefix=cfg.value_head_prefix, normalize_reward=cfg.normalize_reward,
            bf16=cfg.bf16, flash_attn=cfg.flash_attn, load_in_4bit=cfg.load_in_4bit,
            disable_fast_tokenizer=cfg.disable_fast_tokenizer, trust_remote_code=cfg.trust_remote_code,
            reward_output=cfg.reward_output,
        )
        batching = cfg if isinstance(cfg, ServerBatchArgs) else ServerBatchArgs()
        max_batch_tokens = cfg.max_batch_tokens if isinstance(cfg, ServerArgs) else None
        return cls(model, tokenizer, max_len=cfg.reward_max_len, batch_size=batching.batch_size,
                   max_batch_tokens=max_batch_tokens, name=f"reward model {folder}")

    # ------------------------------------------------------------------------------------------------ pieces
    def prepare(self, query: str) -> str:
        """Strip leading/trailing pad and eos, then append exactly one eos (the seed server's rule)."""
        if self._lead is not None:
            query = self._trail.sub("", self._lead.sub("", query))
        return query + self.eos

    def encode(self, queries: Sequence[str]) -> list[list[int]]:
        """Token ids per query, prepared and cut from the left to max_len (the end is where the reward is read)."""
        if not queries:
            return []
        ids = self.tokenizer([self.prepare(q) for q in queries], add_special_tokens=False)["input_ids"]
        # A tokenizer without eos could leave an empty query with no token; score it on one pad token instead.
        return [row[-self.max_len:] or [self.pad_id] for row in ids]

    def forward(self, batch: Sequence[Sequence[int]]) -> list[float]:
        """Rewards of one padded forward pass (right padding: a text's reward does not depend on its company)."""
        width = max(len(row) for row in batch)
        input_ids = torch.tensor([[*row, *[self.pad_id] * (width - len(row))] for row in batch], dtype=torch.long)
        attention_mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in batch], dtype=torch.long)
        device = self.model.device
        with self._lock, torch.inference_mode():
            rewards = self.model(input_ids.to(device), attention_mask.to(device))
        return rewards.tolist()

    # ------------------------------------------------------------------------------------------------ protocol
    def score(self, queries: list[str], prompts: list[str] | None = None,
              labels: list[str] | None = None) -> RewardBatch:
        """Rewards in the order of `queries` (prompts and labels are not read by a reward model)."""
        ids = self.encode(queries)
        rewards = [0.0] * len(ids)
        for group in plan_batches([len(row) for row in ids], self.batch_size, self.max_batch_tokens):
            for i, value in zip(group, self.forward([ids[i] for i in group])):
                rewards[i] = value
        return RewardBatch(rewards=rewards)

    def close(self) -> None:
        """Nothing to release: the model is freed with this object."""
