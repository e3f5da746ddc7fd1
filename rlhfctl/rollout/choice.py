"""Which rollout backend generates a train-ppo step faster on CPUs for the policy at hand: the demo's
`--rollout auto`, and the README's advice.

On CPUs neither always wins: HF `generate` runs on the actor itself and needs no weight sync, a vLLM engine decodes
long responses of larger policies faster but reloads the weights after every update. benchmarks/
rollout_crossover.py measures both (generation, plus the engine's reload for vLLM) by policy size and response
length; MEASURED holds what it printed on a 2-core machine (docs/rollout_crossover.png), and a policy is given
the backend of the measured point nearest to it (parameters and response length on log scales). On GPUs vLLM
is the backend train-ppo is built around, and auto always picks it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

Backend = Literal["hf", "vllm"]

# (policy parameters, response tokens, HF seconds / (vLLM generate + sync) seconds): > 1 where vLLM is faster.
# benchmarks/rollout_crossover.py --sizes 128x4,256x4,512x8 --lengths 4,32,128 --repeats 3 (4 prompts x 8, one
# thread each; load average 70-110 from other jobs, so each figure is the best of 3 turns).
MEASURED: tuple[tuple[int, int, float], ...] = (
    (1_364_352, 4, 0.61), (1_364_352, 32, 0.86), (1_364_352, 128, 0.99),
    (4_825_856, 4, 0.86), (4_825_856, 32, 1.07), (4_825_856, 128, 1.24),
    (34_821_632, 4, 1.43), (34_821_632, 32, 1.24), (34_821_632, 128, 1.43),
)


def policy_params(config: dict) -> int:
    """A decoder-only transformer's parameter count from its config.json (embeddings, attention, MLP, head)."""
    hidden, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    heads = config.get("num_attention_heads", 1)
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads") or heads
    attention = hidden * head_dim * (2 * heads + 2 * kv)
    mlp = 3 * hidden * config.get("intermediate_size", 4 * hidden)
    norms = 2 * hidden
    head = 0 if config.get("tie_word_embeddings", False) else vocab * hidden
    return vocab * hidden + layers * (attention + mlp + norms) + hidden + head


def faster_rollout(params: int, new_tokens: int, use_gpus: bool = False) -> Backend:
    """The backend of the measured point nearest to (params, new_tokens); vLLM on GPUs."""
    if use_gpus:
        return "vllm"

    def distance(point: tuple[int, int, float]) -> float:
        return math.hypot(math.log2(point[0] / params), math.log2(point[1] / max(1, new_tokens)))

    return "vllm" if min(MEASURED, key=distance)[2] > 1.0 else "hf"


def faster_rollout_for(pretrain: str | Path, new_tokens: int, use_gpus: bool = False) -> Backend:
    """faster_rollout for the policy in the local folder `pretrain` (its config.json)."""
    config = json.loads((Path(pretrain) / "config.json").read_text(encoding="utf-8"))
    return faster_rollout(policy_params(config), new_tokens, use_gpus)
