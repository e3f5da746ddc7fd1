"""serve-rm --backend vllm for a reward model: vLLM's pooling runner, each request's texts handed straight to vLLM's
own scheduler (vllm_backend.py says why in the server's process). `vllm.LLM.classify` would need a batcher of ours
in front of it and a pipe to a worker.

Texts are tokenised here exactly as the hf backend does (rewards/queries.py), so both read the same tokens. The
reward is the classification head's raw output at the last token: the pooler's activation is off (vLLM puts a
1-label head through a sigmoid by default), and --normalize-reward is vLLM's affine calibration with config.json's
mean and std, which it applies before the (disabled) activation.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhfctl.errors import UsageError
from rlhfctl.rewards.base import RewardBatch
from rlhfctl.serving.vllm_backend import VLLMBackend, common_engine_kwargs

if TYPE_CHECKING:
    from rlhfctl.config import ModelLoadArgs, RewardModelOptions, ServerArgs, ServerBatchArgs, VLLMEngineArgs

log = logging.getLogger("rlhfctl.serve")


def check_reward_model(folder: Path) -> dict[str, Any]:
    """config.json of a model vLLM's pooling runner can serve as a reward: a *ForSequenceClassification with one
    label; else a UsageError naming what the folder is and what serves it."""
    from rlhfctl.models.reward import read_config

    config = read_config(folder)
    architectures = config.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise UsageError(f"--backend vllm: {folder} is {', '.join(architectures) or 'no known architecture'}, not a "
                         "*ForSequenceClassification model (an OpenRLHF value-head reward model loads with "
                         "--backend hf)")
    labels = config.get("num_labels", len(config.get("id2label") or {}) or 2)
    if labels != 1:
        raise UsageError(f"--backend vllm: {folder} has {labels} labels; a reward model has one output per text")
    return config


def engine_args(folder: Path, loading: ModelLoadArgs, options: RewardModelOptions, batching: ServerBatchArgs,
                server: ServerArgs, engine: VLLMEngineArgs) -> Any:
    """vLLM's AsyncEngineArgs for the reward model in `folder`, with the pooler's activation off."""
    from vllm import AsyncEngineArgs
    from vllm.config import PoolerConfig

    from rlhfctl.models.reward import reward_normalisation
    from rlhfctl.rollout.engine import max_model_len

    config = check_reward_model(folder)
    mean, std = reward_normalisation(folder, config, options.normalize_reward)
    pooler = PoolerConfig(use_activation=False, **({"logit_mean": mean, "logit_sigma": std}
                                                   if options.normalize_reward else {}))
    longest = max_model_len(str(folder), options.reward_max_len)
    return AsyncEngineArgs(runner="pooling", pooler_config=pooler,
                           **common_engine_kwargs(folder, loading, batching, server, engine, longest,
                                                  "--reward-max-len"))


class VLLMScorer(VLLMBackend):
    """A reward model on vLLM's pooling runner: each text one vLLM request."""

    def __init__(self, folder: str, loading: ModelLoadArgs, options: RewardModelOptions, batching: ServerBatchArgs,
                 engine: VLLMEngineArgs, server: ServerArgs) -> None:
        super().__init__(folder, f"reward model {folder} (vLLM)", engine)
        self._loading, self._options = loading, options
        self._batching, self._server = batching, server
        self._encoder: Any = None
        self._params: Any = None

    def check(self) -> None:
        check_reward_model(self.folder)

    def prepare(self) -> Any:
        from vllm import PoolingParams

        from rlhfctl.models.reward import load_tokenizer
        from rlhfctl.rewards.queries import QueryEncoder

        args = engine_args(self.folder, self._loading, self._options, self._batching, self._server,
                           self._engine_options)
        tokenizer = load_tokenizer(self.folder, use_fast=not self._loading.disable_fast_tokenizer)
        self._encoder = QueryEncoder(tokenizer, min(self._options.reward_max_len, args.max_model_len))
        self._params = PoolingParams(task="classify", use_activation=False)
        return args

    async def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        """Each query is one vLLM request; they are scheduled with every other client's."""
        if self.failure:
            raise RuntimeError(self.failure)
        rows = self._encoder.encode(queries)
        rewards = await asyncio.gather(*(self._reward(row) for row in rows))
        return RewardBatch(rewards=list(rewards))

    async def _reward(self, ids: list[int]) -> float:
        from vllm.inputs import TokensPrompt

        final = await self.last(self._engine.encode(TokensPrompt(prompt_token_ids=ids), self._params,
                                                    request_id=self.request_id("rm")))
        assert final.outputs.data.numel() == 1, "classify answers one value per text"
        return float(final.outputs.data.item())
