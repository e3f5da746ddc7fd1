"""A direct HTTP probe of one reward server: the load check for a URL, with a precise diagnosis of each way a server
can fail the protocol (unreachable, 401, 404, 5xx, not JSON, no `rewards`, wrong length).

Deliberately not the training client (rewards/remote.py, with pooling and retries), which scores the dataset
afterwards: the load check wants the first answer as it is, not one retried into success.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from rlhfctl.rewards.base import RewardBatch
from rlhfctl.rewards.contract import RewardFault, to_reward_batch

HINTS = {
    401: "the server wants a token: pass --api-key (or set RLHFCTL_API_KEY)",
    403: "the token was refused: check --api-key",
    404: "no such path: serve-rm and OpenRLHF's server answer POST /get_reward",
    405: "the path does not take POST: serve-rm and OpenRLHF's server answer POST /get_reward",
}


class HttpProbe:
    """POST `{"query", "prompts", "labels"}` to one URL and read the answer as OpenRLHF's client does."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.url = url
        self.name = url
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self.timeout = timeout

    def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        body = {"query": list(queries), "prompts": list(prompts), "labels": list(labels)}
        try:
            answer = self._client.post(self.url, json=body)
        except httpx.TimeoutException:
            raise RewardFault(f"no answer within the timeout of {self.timeout:g}s", kind="timeout",
                              where=self.url) from None
        except httpx.HTTPError as exc:
            raise RewardFault(f"cannot reach the server ({type(exc).__name__}: {exc}); is it running?",
                              kind="unreachable", where=self.url) from None
        if answer.status_code != 200:
            hint = HINTS.get(answer.status_code, "")
            raise RewardFault(
                f"answered HTTP {answer.status_code}: {_snippet(answer.text)}" + (f" ({hint})" if hint else ""),
                kind="http", where=self.url,
            )
        try:
            payload: Any = answer.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RewardFault(f"answered 200 but not JSON: {_snippet(answer.text)}", kind="protocol",
                              where=self.url) from None
        if not isinstance(payload, dict):
            raise RewardFault(
                f"answered a JSON {type(payload).__name__}, not an object with 'rewards' ({_snippet(answer.text)})",
                kind="protocol", where=self.url,
            )
        return to_reward_batch(payload, len(queries), where=self.url, allow_extra_keys=True)

    def close(self) -> None:
        self._client.close()


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "...")
