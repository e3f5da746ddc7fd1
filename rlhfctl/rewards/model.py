"""ModelReward: an in-process reward model, which serve-rm's dynamic batcher also runs.

Queries are prepared as OpenRLHF's reward server does (rewards/queries.py), then scored in length-sorted batches
under a token budget, so little compute goes to padding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

from rlhfctl.rewards.batched import BatchedSource
from rlhfctl.rewards.queries import QueryEncoder

if TYPE_CHECKING:
    from rlhfctl.config import ModelLoadArgs, RewardModelOptions, ServerArgs, ServerBatchArgs


class ModelReward(BatchedSource):
    """A reward model scoring texts in-process; also what serve-rm runs.

    `score()` may be called from several threads; forward passes are serialised by a lock.
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_len: int = 2048, batch_size: int = 16,
                 max_batch_tokens: int | None = None, name: str = "reward model") -> None:
        super().__init__(model, tokenizer, name=name, max_len=max_len, batch_size=batch_size,
                         max_batch_tokens=max_batch_tokens)
        self.queries = QueryEncoder(tokenizer, max_len)
        self.pad_id = self.queries.pad_id

    @classmethod
    def from_config(cls, folder: str, loading: ModelLoadArgs, options: RewardModelOptions, *,
                    batching: ServerBatchArgs | None = None, server: ServerArgs | None = None) -> "ModelReward":
        """The reward model in `folder` (--reward-pretrain, or a model named in --reward) read with the model
        options; serve-rm's batching options where the command has them (train-ppo's reward role and
        check-reward have none, and score with serve-rm's defaults)."""
        from rlhfctl.models.reward import load_reward_model

        model, tokenizer = load_reward_model(
            folder, value_head_prefix=options.value_head_prefix, normalize_reward=options.normalize_reward,
            bf16=loading.bf16, flash_attn=loading.flash_attn, load_in_4bit=loading.load_in_4bit,
            disable_fast_tokenizer=loading.disable_fast_tokenizer, trust_remote_code=options.trust_remote_code,
            reward_output=options.reward_output,
        )
        sizes = {} if batching is None else {"batch_size": batching.batch_size}
        return cls(model, tokenizer, max_len=options.reward_max_len,
                   max_batch_tokens=server.max_batch_tokens if server is not None else None,
                   name=f"reward model {folder}", **sizes)

    # ------------------------------------------------------------------------------------------------ pieces
    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per query, prepared and cut from the left to max_len (rewards/queries.py)."""
        return self.queries.encode(texts)

    def forward(self, batch: Sequence[Sequence[int]]) -> list[float]:
        """Rewards of one padded forward pass (right padding: a text's reward does not depend on its company)."""
        width = max(len(row) for row in batch)
        input_ids = torch.tensor([[*row, *[self.pad_id] * (width - len(row))] for row in batch], dtype=torch.long)
        attention_mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in batch], dtype=torch.long)
        device = self.model.device
        with self._lock, torch.inference_mode():
            rewards = self.model(input_ids.to(device), attention_mask.to(device))
        return rewards.tolist()
