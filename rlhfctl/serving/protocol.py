"""The /get_reward wire format (OpenRLHF's): request parsing with messages that name the problem, and the schema
shown at /docs.

Parsing is by hand rather than through FastAPI's body validation: it is several times cheaper per request (the
overhead-bound regime is all requests), and each message says what to send instead.
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional

from pydantic import BaseModel, Field

from rlhfctl.rewards.base import RewardBatch


class ClientError(Exception):
    """Something the client sent is wrong: answered with `status` and `message`, never a 500."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class RewardRequest(BaseModel):
    """Body of POST /get_reward."""

    query: list[str] = Field(..., min_length=1, description="Texts to score: prompt + response, as the policy saw it.")
    prompts: Optional[list[str]] = Field(None, description="The prompts alone, one per query (reward functions).")
    labels: Optional[list[str]] = Field(None, description="Dataset labels, one per query (reward functions).")


class RewardResponse(BaseModel):
    """Answer of POST /get_reward: one reward per query, in order."""

    rewards: list[float] = Field(..., description="One reward per query.")
    scores: list[float] = Field(..., description="Scores per query (the rewards, unless a reward function says).")
    extra_logs: dict[str, list[float]] = Field(default_factory=dict, description="Per-query values to log.")


class ErrorResponse(BaseModel):
    detail: str = Field(..., description="What was wrong and what to send instead.")
    kind: Optional[str] = Field(None, description="When the reward failed on the request: a short code, e.g. "
                                "\"nan\" (a non-finite reward), \"raised\", \"timeout\".")
    index: Optional[int] = Field(None, description="The failing query's index in the request, where known.")
    retryable: Optional[bool] = Field(None, description="false: the same request fails the same way again.")


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def parse_reward_request(body: bytes, max_queries: int) -> tuple[list[str], list[str], list[str]]:
    """queries, prompts, labels from a request body; prompts and labels default to empty strings."""
    if not body.strip():
        raise ClientError(422, 'the body is empty; send a JSON object like {"query": ["text", ...]}')
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise ClientError(422, "the body is not UTF-8 text; send JSON encoded as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ClientError(422, f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ClientError(422, "the body is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise ClientError(422, f'the body must be a JSON object like {{"query": ["text", ...]}}, not {_type_name(data)}')
    if "query" not in data:
        hint = next((f' (found "{k}": did you mean "query"?)' for k in ("queries", "texts", "inputs") if k in data), "")
        raise ClientError(422, f'"query" is required: a list of texts (prompt + response) to score{hint}')
    queries = _strings(data["query"], "query", None)
    if len(queries) > max_queries:
        raise ClientError(413, f'"query" has {len(queries)} texts; this server takes at most {max_queries} per '
                               "request (--max-queries-per-request): split the batch")
    n = len(queries)
    prompts = _strings(data.get("prompts"), "prompts", n)
    labels = _strings(data.get("labels"), "labels", n)
    if b"\\u" in body:  # only escapes can smuggle in lone surrogates, which no tokenizer accepts
        for name, values in (("query", queries), ("prompts", prompts), ("labels", labels)):
            for i, text in enumerate(values):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise ClientError(422, f'"{name}"[{i}] holds a lone surrogate escape (\\ud800-\\udfff), which is '
                                           "not text") from None
    return queries, prompts, labels


def _strings(value: Any, name: str, n: int | None) -> list[str]:
    """A list of strings; for prompts/labels (n given) null or absent means n empty strings."""
    if value is None and n is not None:
        return [""] * n
    if not isinstance(value, list):
        wrap = " (wrap a single text in a list)" if isinstance(value, str) else ""
        raise ClientError(422, f'"{name}" must be a list of strings, not {_type_name(value)}{wrap}')
    if n is None and not value:
        raise ClientError(422, f'"{name}" is an empty list; send at least one text')
    if n is not None and len(value) != n:
        raise ClientError(422, f'"{name}" has {len(value)} items but "query" has {n}; send one per query or leave '
                               f'"{name}" out')
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ClientError(422, f'"{name}"[{i}] must be a string, not {_type_name(item)}')
    return value


class NonFiniteReward(ValueError):
    """A reward source returned NaN or inf as the reward or score of query `index` of the request."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


def encode_answer(batch: RewardBatch) -> bytes:
    """A RewardBatch as the answer's JSON. A non-finite reward or score raises NonFiniteReward: it must not reach a
    trainer as a number. extra_logs may hold NaN ("not logged"), written as Python's json writes it, which Python
    clients (OpenRLHF's included) read back."""
    answer = batch.to_json()
    for key in ("rewards", "scores"):
        for i, value in enumerate(answer[key]):
            if not math.isfinite(value):
                raise NonFiniteReward(f"{key}[{i}] is {value}", index=i)
    return json.dumps(answer, separators=(",", ":")).encode()
