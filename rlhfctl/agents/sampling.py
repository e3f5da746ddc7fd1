"""vLLM-shaped request and output objects, for agent code run with Hugging Face generation.

An OpenRLHF agent reads `sampling_params.max_tokens`, sets it, deep-copies the object, and reads
`request_output.outputs[0].token_ids / .text / .logprobs / .finish_reason`. With vLLM as the backend the real
`vllm.SamplingParams` and `RequestOutput` are used; with Hugging Face generation these stand-ins carry the same
attribute names, so one agent_func.py runs on both. No torch or vLLM import here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class SamplingParams:
    """The subset of `vllm.SamplingParams` an agent reads or sets (same names, same meaning).

    `max_tokens` new tokens at most (None: what the length budget leaves); `temperature` 0 is greedy; `top_k`
    -1 or 0 is off; `logprobs` not None asks for the sampled tokens' log-probs; `n` outputs per request."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: Optional[int] = 16
    min_tokens: int = 0
    logprobs: Optional[int] = None
    skip_special_tokens: bool = True
    stop: Optional[list[str]] = None
    seed: Optional[int] = None

    def clone(self) -> "SamplingParams":
        return SamplingParams(**{k: getattr(self, k) for k in self.__dataclass_fields__})


@dataclass
class Logprob:
    """One entry of vLLM's per-position log-prob dict (`{token_id: Logprob}`)."""

    logprob: float
    rank: Optional[int] = None
    decoded_token: Optional[str] = None


@dataclass
class CompletionOutput:
    """One sampled continuation: vLLM's `RequestOutput.outputs[i]`."""

    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: Optional[float] = None
    logprobs: Optional[list[dict[int, Logprob]]] = None
    finish_reason: Optional[str] = None  # "stop" (an EOS) or "length" (max_tokens reached)


@dataclass
class RequestOutput:
    """vLLM's `RequestOutput`: the request's prompt ids and its `outputs`."""

    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = True
    prompt: Optional[str] = None


def read_params(params: Any) -> dict[str, Any]:
    """The generation settings of a SamplingParams (ours or vLLM's) as plain values."""
    top_k = getattr(params, "top_k", -1)
    return {
        "n": int(getattr(params, "n", 1) or 1),
        "temperature": float(getattr(params, "temperature", 1.0)),
        "top_p": float(getattr(params, "top_p", 1.0)),
        "top_k": int(top_k) if top_k and top_k > 0 else 0,
        "max_tokens": getattr(params, "max_tokens", None),
        "logprobs": getattr(params, "logprobs", None),
        "skip_special_tokens": bool(getattr(params, "skip_special_tokens", True)),
    }
