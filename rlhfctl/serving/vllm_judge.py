"""serve-rm --backend vllm --judge-model: an LLM judge on vLLM's generate runner, each judge prompt one vLLM request.

The judge prompts are the hf backend's tokens (rewards/judge.py's JudgePrompts), so both backends grade the same
input. logprobs mode asks vLLM for the log-probabilities of exactly the score tokens at the first generated
position (`logprob_token_ids`: no full-vocabulary answer) and renormalises them over those tokens, as the hf
backend does with their logits; generate mode decodes greedily and parses a number with the same parser.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhfctl.errors import UsageError
from rlhfctl.rewards.base import RewardBatch
from rlhfctl.rewards.judge import (JudgePrompts, JudgeSettings, Value, batch_of_values, expected_score, judge_inputs,
                                   score_token_ids)
from rlhfctl.serving.vllm_backend import VLLMBackend, common_engine_kwargs

if TYPE_CHECKING:
    from rlhfctl.config import JudgeArgs, ModelLoadArgs, ServerArgs, ServerBatchArgs, VLLMEngineArgs


def check_judge_model(folder: Path) -> None:
    """A folder vLLM's generate runner can serve as a judge: a model with a language-model head."""
    from rlhfctl.models.reward import read_config

    try:
        architectures = read_config(folder).get("architectures") or []
    except UsageError as exc:
        raise UsageError(str(exc).replace("--reward-pretrain", "--judge-model", 1)) from None
    if any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise UsageError(f"--judge-model {folder} is {', '.join(architectures)}, a reward model, not a causal LM that "
                         "answers with a score: serve it with --reward-pretrain")


class VLLMJudge(VLLMBackend):
    """A causal LM judge on vLLM: greedy, so a query scores the same every time (cacheable)."""

    def __init__(self, judge: JudgeArgs, loading: ModelLoadArgs, batching: ServerBatchArgs, engine: VLLMEngineArgs,
                 server: ServerArgs) -> None:
        assert judge.judge_model is not None
        super().__init__(judge.judge_model, f"judge {judge.judge_model} ({judge.judge_mode}, vLLM)", engine)
        self.settings = JudgeSettings.from_config(judge)  # a bad template or score token spec: exit 2 before vLLM
        self._judge, self._loading = judge, loading
        self._batching, self._server = batching, server
        self._prompts: JudgePrompts | None = None
        self._params: Any = None
        self._score_ids: list[int] = []

    def check(self) -> None:
        check_judge_model(self.folder)

    @property
    def new_tokens(self) -> int:
        """Tokens each request generates: one score token (logprobs), or up to --judge-max-new-tokens."""
        return 1 if self.settings.mode == "logprobs" else self.settings.max_new_tokens

    def prepare(self) -> Any:
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs, SamplingParams
        from vllm.sampling_params import MAX_LOGPROB_TOKEN_IDS

        from rlhfctl.rollout.engine import max_model_len

        tokenizer = AutoTokenizer.from_pretrained(self.folder, use_fast=not self._loading.disable_fast_tokenizer)
        if self._judge.judge_chat_template and not tokenizer.chat_template:
            raise UsageError(f"--judge-chat-template: the tokenizer of {self.folder} has no chat template")
        longest = max_model_len(str(self.folder), self._judge.judge_max_len + self.new_tokens)
        if longest <= self.new_tokens:
            raise UsageError(f"--judge-max-new-tokens {self.new_tokens} leaves no room for the prompt in the "
                             f"{longest} positions of {self.folder}")
        # As the hf backend, prompts are cut from the left to --judge-max-len; here also to what leaves room for
        # the answer within the model's positions (vLLM refuses a longer request rather than cut it).
        self._prompts = JudgePrompts(tokenizer, self.settings.template, chat=self._judge.judge_chat_template,
                                     max_len=min(self._judge.judge_max_len, longest - self.new_tokens))
        if self.settings.mode == "logprobs":
            self._score_ids = score_token_ids(tokenizer, [t.text for t in self.settings.score_tokens])
            if len(self._score_ids) > MAX_LOGPROB_TOKEN_IDS:
                raise UsageError(f"--judge-score-tokens: {len(self._score_ids)} tokens; vLLM returns the "
                                 f"log-probabilities of at most {MAX_LOGPROB_TOKEN_IDS} (or use --backend hf)")
            self._params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=self._score_ids,
                                          detokenize=False)
        else:
            self._params = SamplingParams(max_tokens=self.settings.max_new_tokens, temperature=0.0,
                                          skip_special_tokens=True)
        return AsyncEngineArgs(runner="generate",
                               **common_engine_kwargs(self.folder, self._loading, self._batching, self._server,
                                                      self._engine_options, longest, "--judge-max-len"))

    async def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        """Each judge prompt is one vLLM request; they are scheduled with every other client's."""
        if self.failure:
            raise RuntimeError(self.failure)
        prompts, labels, empty = judge_inputs(queries, prompts, labels)
        if empty is not None:
            return empty
        assert self._prompts is not None, "launch() first"
        rows = self._prompts.encode(self._prompts.render(queries, prompts, labels))
        values = await asyncio.gather(*(self._value(row) for row in rows))
        return batch_of_values(values)

    async def _value(self, ids: list[int]) -> Value:
        from vllm.inputs import TokensPrompt

        final = await self.last(self._engine.generate(TokensPrompt(prompt_token_ids=ids), self._params,
                                                      request_id=self.request_id("judge")))
        answer = final.outputs[0]
        if self.settings.mode == "generate":
            return self.settings.parsed(answer.text)
        logprobs = answer.logprobs[0]  # {token id: Logprob} at the one generated position
        probabilities = _renormalised([logprobs[i].logprob for i in self._score_ids])
        return expected_score(probabilities, [t.value for t in self.settings.score_tokens])


def _renormalised(logprobs: list[float]) -> list[float]:
    """Probabilities of the score tokens relative to each other (a softmax of their log-probabilities)."""
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    return [w / total for w in weights]
