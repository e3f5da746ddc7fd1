"""JudgeModel: a causal LM that grades responses (serve-rm --judge-model, train-ppo and check-reward too).

It is a BatchedSource like ModelReward: serve-rm's DynamicBatcher tokenises the rendered judge prompts and runs
them in shared, length-sorted forward passes. In logprobs mode a pass reads the judge's logits of the score tokens
at each prompt's last token (right padding, so a prompt's reward does not depend on its company) and returns the
expected score. Only the score tokens' rows of the output layer are computed: renormalised over those tokens, the
rest of the vocabulary cancels out. In generate mode a pass generates greedily (left padding) and parses a number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

from rlhfctl.errors import UsageError
from rlhfctl.rewards.batched import BatchedSource
from rlhfctl.rewards.judge import JudgePrompts, JudgeSettings, Value, expected_score, score_token_ids

if TYPE_CHECKING:
    from rlhfctl.config import JudgeArgs, ModelLoadArgs, ServerArgs, ServerBatchArgs


class JudgeModel(BatchedSource):
    """A causal LM judge scoring in-process; passes serialised by a lock. Greedy, so a query scores the same every
    time (cacheable, as BatchedSource says)."""

    def __init__(self, model: Any, tokenizer: Any, settings: JudgeSettings, *, max_len: int = 4096,
                 batch_size: int = 16, max_batch_tokens: int | None = None, chat: bool = False,
                 name: str = "judge") -> None:
        super().__init__(model, tokenizer, name=name, max_len=max_len, batch_size=batch_size,
                         max_batch_tokens=max_batch_tokens)
        self.settings = settings
        self.chat = chat
        self.prompts = JudgePrompts(tokenizer, settings.template, chat=chat, max_len=max_len)
        self.pad_id = self.prompts.pad_id
        self.score_ids = score_token_ids(tokenizer, [t.text for t in settings.score_tokens])
        self.values = torch.tensor([t.value for t in settings.score_tokens], dtype=torch.float64)

    @classmethod
    def from_config(cls, judge: JudgeArgs, loading: ModelLoadArgs, *, batching: ServerBatchArgs | None = None,
                    server: ServerArgs | None = None) -> "JudgeModel":
        """From --judge-model (a folder by now: commands resolve Hub IDs first), the judge and model-loading
        options, and serve-rm's batching options where the command has them."""
        from transformers import AutoTokenizer

        from rlhfctl.models.actor import load_policy

        assert judge.judge_model is not None
        settings = JudgeSettings.from_config(judge)
        try:
            model = load_policy(judge.judge_model, bf16=loading.bf16, flash_attn=loading.flash_attn,
                                load_in_4bit=loading.load_in_4bit)
        except UsageError as exc:
            raise UsageError(str(exc).replace("--pretrain", "--judge-model", 1)) from None
        tokenizer = AutoTokenizer.from_pretrained(judge.judge_model, use_fast=not loading.disable_fast_tokenizer)
        if judge.judge_chat_template and not tokenizer.chat_template:
            raise UsageError(f"--judge-chat-template: the tokenizer of {judge.judge_model} has no chat template")
        if torch.cuda.is_available() and not loading.load_in_4bit:
            model = model.cuda()
        model.eval()
        sizes = {} if batching is None else {"batch_size": batching.batch_size}
        return cls(model, tokenizer, settings, max_len=judge.judge_max_len,
                   max_batch_tokens=server.max_batch_tokens if server is not None else None,
                   chat=judge.judge_chat_template, name=f"judge {judge.judge_model} ({judge.judge_mode})", **sizes)

    # ------------------------------------------------------------------------------------------------ pieces
    def render(self, queries: Sequence[str], prompts: Sequence[str], labels: Sequence[str]) -> list[str]:
        return self.prompts.render(queries, prompts, labels)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.prompts.encode(texts)

    def forward(self, batch: Sequence[Sequence[int]]) -> list[Value]:
        """One value per row: a float (logprobs), or (reward, {"judge_unparsed": 0/1}) (generate)."""
        with self._lock, torch.inference_mode():
            if self.settings.mode == "generate":
                return self._generate(batch)
            return self._expected(batch)

    def _expected(self, batch: Sequence[Sequence[int]]) -> list[float]:
        width = max(len(row) for row in batch)
        device = self.model.device
        input_ids = torch.tensor([[*row, *[self.pad_id] * (width - len(row))] for row in batch], device=device)
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in batch], device=device)
        hidden = self.model.get_decoder()(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
        last = hidden[torch.arange(len(batch), device=device), mask.sum(dim=1) - 1]
        head = self.model.get_output_embeddings()
        logits = last.to(head.weight.dtype) @ head.weight[self.score_ids].T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[self.score_ids]
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        probabilities = torch.softmax(logits.double(), dim=-1).cpu()
        return [expected_score(p.tolist(), self.values.tolist()) for p in probabilities]

    def _generate(self, batch: Sequence[Sequence[int]]) -> list[tuple[float, dict[str, float]]]:
        width = max(len(row) for row in batch)
        device = self.model.device
        input_ids = torch.tensor([[self.pad_id] * (width - len(row)) + [*row] for row in batch], device=device)
        mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in batch], device=device)
        out = self.model.generate(input_ids=input_ids, attention_mask=mask, do_sample=False,
                                  max_new_tokens=self.settings.max_new_tokens, pad_token_id=self.pad_id)
        texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        return [self.settings.parsed(text) for text in texts]
