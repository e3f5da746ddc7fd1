"""PPO-ptx (--pretrain-data, --ptx-coef): the actor's batches of pretraining text and their language-model loss.

Each actor worker reads the text itself, as OpenRLHF's actor does (the driver only checks it, before Ray starts),
and keeps its own share of the rows (rank r of w: rows r, r + w, ...). The rows of one training step are drawn from
a permutation seeded by --seed, the step and the rank, so a resumed run draws what the uninterrupted run drew, with
no position to checkpoint. Texts are cut at the end to --prompt-max-len + --generate-max-len tokens, OpenRLHF's
ptx length.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from rlhfctl.rollout.samples import step_seed

if TYPE_CHECKING:
    from rlhfctl.config import PtxArgs

PTX_SALT = 7  # step_seed's purpose number for these draws (1 and 3: sampling, 2: micro-batch order)


def pretrain_texts(ptx: PtxArgs) -> list[str]:
    """--pretrain-data's texts (the driver's check and each worker's read). --pretrain-input-key is filled in by
    the driver (default: --input-key)."""
    from rlhfctl.data import load_texts

    assert ptx.pretrain_data is not None and ptx.pretrain_input_key is not None
    return load_texts(ptx.pretrain_data, ptx.pretrain_input_key, ptx.pretrain_split, ptx.pretrain_max_samples)


def checked_in_driver(ptx: PtxArgs, input_key: str) -> dict[str, Any]:
    """The driver's changes to --pretrain-data's options before the workers get them: the key's default
    (--input-key), local paths made absolute (a Ray worker's working directory is not the driver's); and the texts
    read once, so a bad file or key exits 2 before Ray starts."""
    import os

    assert ptx.pretrain_data is not None
    parts = [p.strip() for p in ptx.pretrain_data.split(",")] if not os.path.exists(ptx.pretrain_data) \
        else [ptx.pretrain_data]
    updates = {"pretrain_input_key": ptx.pretrain_input_key or input_key,
               "pretrain_data": ",".join(os.path.abspath(p) if os.path.exists(p) else p for p in parts)}
    pretrain_texts(ptx.model_copy(update=updates))
    return updates


class PretrainBatches:
    """One worker's pretraining rows, served --micro-train-batch-size at a time, in a fresh order each step."""

    def __init__(self, ptx: PtxArgs, tokenizer: Any, max_len: int, rows_per_batch: int, seed: int, rank: int,
                 world_size: int) -> None:
        texts = pretrain_texts(ptx)
        # fewer rows than workers: every worker trains on all of them rather than some on none
        self.texts = texts[rank::world_size] if len(texts) >= world_size else texts
        self.tokenizer, self.max_len, self.rows_per_batch = tokenizer, max_len, rows_per_batch
        self.seed, self.rank = seed, rank
        self.begin(0)

    def begin(self, step: int) -> None:
        """Start drawing step `step`'s rows."""
        self._generator = torch.Generator().manual_seed(step_seed(self.seed, step, self.rank, salt=PTX_SALT))
        self._order: list[int] = []

    def next_batch(self) -> tuple[Tensor, Tensor]:
        """(input_ids, attention_mask) of the next rows; a pass over the rows ends, the next starts reshuffled."""
        rows = []
        while len(rows) < self.rows_per_batch:
            if not self._order:
                self._order = torch.randperm(len(self.texts), generator=self._generator).tolist()
            rows.append(self._order.pop())
        # cut at the end, padded on the right, whatever sides the tokenizer is set to cut and pad prompts on
        tokens = [ids[:self.max_len] for ids in self.tokenizer([self.texts[r] for r in rows],
                                                               add_special_tokens=False)["input_ids"]]
        input_ids = torch.full((len(tokens), max(map(len, tokens))), self.tokenizer.pad_token_id or 0)
        attention_mask = torch.zeros_like(input_ids)
        for i, ids in enumerate(tokens):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            attention_mask[i, :len(ids)] = 1
        return input_ids, attention_mask

    def loss(self, model: Any, device: torch.device) -> Tensor:
        """The language-model loss of the next batch under `model` (the engine's module: forward through it)."""
        from rlhfctl.models.actor import position_ids
        from rlhfctl.ppo.functional import ptx_loss

        ids, mask = (t.to(device) for t in self.next_batch())
        logits = model(ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False).logits
        return ptx_loss(logits, ids, mask)
