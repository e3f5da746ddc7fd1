"""How a reward model's queries become token ids, as OpenRLHF's reward server prepares them: leading/trailing pad
and eos stripped, exactly one eos appended, no other special tokens, cut from the LEFT to `max_len` tokens (the end,
where the reward is read, survives). One module, so every backend that scores a reward model (transformers in
ModelReward, vLLM in serving/vllm_scorer.py) reads the same tokens for a text. No torch here.
"""

from __future__ import annotations

import re
from typing import Any, Sequence


class QueryEncoder:
    """Token ids per query for a reward model's tokenizer (`pad_id` is the id a row is padded with)."""

    def __init__(self, tokenizer: Any, max_len: int) -> None:
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos = tokenizer.eos_token or ""
        edges = "|".join(re.escape(t) for t in {tokenizer.pad_token, tokenizer.eos_token} if t)
        self._lead = re.compile(f"^(?:{edges})+") if edges else None
        self._trail = re.compile(f"(?:{edges})+$") if edges else None

    def prepare(self, query: str) -> str:
        """Strip leading/trailing pad and eos, then append exactly one eos (the seed server's rule)."""
        if self._lead is not None:
            query = self._trail.sub("", self._lead.sub("", query))
        return query + self.eos

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per query, prepared and cut from the left to max_len."""
        if not texts:
            return []
        ids = self.tokenizer([self.prepare(q) for q in texts], add_special_tokens=False)["input_ids"]
        # A tokenizer without eos could leave an empty query with no token; score it on one pad token instead.
        return [row[-self.max_len:] or [self.pad_id] for row in ids]
