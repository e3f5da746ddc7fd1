"""RemoteReward: the client of a reward server speaking OpenRLHF's /get_reward (serve-rm or any compatible one).

A batch is split into contiguous shards, one request per server (never an empty one, never inside a prompt's
group: a pairwise server compares the samples of one prompt), sent in parallel over a
pooled connection per server. Failures that may pass (connection errors, timeouts, 429, 5xx) are retried with
exponential backoff and jitter; others (a 4xx: our request is wrong) fail at once. A failure is never a reward
of 0: it raises RewardError naming the server and the cause. `score()` is synchronous and thread-safe, so plain
code, thread pools and Ray actors use it alike; `max_inflight` caps requests in flight over all threads.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Callable, Sequence
from urllib.parse import urlsplit

import httpx

from rlhfctl.errors import RewardError, UsageError
from rlhfctl.rewards.base import RewardBatch, RewardSource, check_batch
from rlhfctl.rewards.contract import RewardFault, to_reward_batch
from rlhfctl.rewards.groups import group_shards

if TYPE_CHECKING:
    from rlhfctl.config import AuthArgs, RemoteRewardArgs

log = logging.getLogger(__name__)
MAX_DELAY = 60.0  # seconds; a Retry-After or a long backoff never sleeps longer than this
IDLE_EXPIRY_S = 4.0  # an idle pooled connection is closed after this long


def parse_urls(urls: str | Sequence[str]) -> list[str]:
    """Comma-separated or listed http(s) URLs; a bare `http://host:port` gets OpenRLHF's `/get_reward` path."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    out = []
    for raw in (u.strip() for u in items):
        if not raw:
            continue
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"{raw!r} is not a reward server URL (expected http://HOST:PORT/get_reward)")
        out.append(raw.rstrip("/") + "/get_reward" if parts.path in ("", "/") else raw)
    if not out:
        raise UsageError("no reward server URL given (expected http://HOST:PORT/get_reward, comma-separated)")
    return out


class RemoteReward(RewardSource):
    """Rewards from one or more reward servers. Not cacheable until `probe()` has asked the server."""

    def __init__(self, urls: str | Sequence[str], api_key: str | None = None, timeout: float = 60.0,
                 max_retries: int = 5, retry_backoff: float = 0.5, max_inflight: int = 32) -> None:
        self.urls = parse_urls(urls)
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_inflight = max_inflight
        self.name = "reward server " + ", ".join(self.urls)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            timeout=timeout, headers=headers,
            # Idle connections expire before uvicorn's default keep-alive of 5 s (OpenRLHF's server runs with it), so
            # the client never reuses one the server is closing at that moment.
            limits=httpx.Limits(max_connections=max_inflight, max_keepalive_connections=max_inflight,
                                keepalive_expiry=IDLE_EXPIRY_S),
        )
        self._slots = threading.BoundedSemaphore(max_inflight)
        self._turn = itertools.count()  # rotates the first server, so one-text calls spread over all servers
        # Shards beyond the first go to this pool (the caller sends the first); sized like the in-flight cap so
        # many threads calling score() at once are limited by max_inflight only.
        self._pool = ThreadPoolExecutor(max_inflight, thread_name_prefix="reward-shard") if len(self.urls) > 1 \
            else None

    @classmethod
    def from_config(cls, remote: RemoteRewardArgs, auth: AuthArgs, urls: str | Sequence[str], *,
                    timeout: float | None = None) -> "RemoteReward":
        """A client for `urls` with the reward client options and --api-key; `timeout` overrides --rm-timeout."""
        return cls(urls, api_key=auth.api_key, timeout=timeout or remote.rm_timeout,
                   max_retries=remote.rm_max_retries, retry_backoff=remote.rm_retry_backoff,
                   max_inflight=remote.rm_max_inflight)

    def score(self, queries: list[str], prompts: list[str] | None = None,
              labels: list[str] | None = None) -> RewardBatch:
        n = len(queries)
        prompts = [""] * n if prompts is None else list(prompts)
        labels = [""] * n if labels is None else list(labels)
        if (empty := check_batch(queries, prompts, labels)) is not None:
            return empty
        first = next(self._turn)
        jobs = [(self.urls[(first + i) % len(self.urls)], {"query": list(queries[a:b]), "prompts": prompts[a:b],
                                                           "labels": labels[a:b]}, a)
                for i, (a, b) in enumerate((s.start, s.stop) for s in group_shards(prompts, len(self.urls)))]
        if len(jobs) == 1 or self._pool is None:
            return self._post(*jobs[0])
        futures = [self._pool.submit(self._post, *job) for job in jobs[1:]]
        try:
            head = self._post(*jobs[0])
        except BaseException:
            wait(futures)  # no shard left running behind the caller's back
            raise
        return RewardBatch.concat([head, *(f.result() for f in futures)])

    def _post(self, url: str, payload: dict[str, list[str]], start: int = 0) -> RewardBatch:
        """One shard to one server, with retries; the answer checked against the number of queries sent. `start`
        is the shard's place in the whole batch, where a failing sample's index is counted from."""
        n = len(payload["query"])
        return self._answer(url, self.send(url, payload, start, n), n)

    def send(self, url: str, payload: dict[str, Any], start: int = 0, n: int = 1,
             pace: Callable[[], None] | None = None) -> httpx.Response:
        """POST `payload` as JSON with this client's retries, backoff, timeout and in-flight cap; the 200 answer,
        or RewardError naming the cause (also for other JSON APIs: the LLM judge's chat client). `pace()`, if
        given, is called before each attempt (a requests-per-minute limit)."""
        cause = ""
        for attempt in range(self.max_retries + 1):
            retry_after = 0.0
            if pace is not None:
                pace()
            with self._slots:
                try:
                    response = self._client.post(url, json=payload)
                except httpx.TimeoutException:
                    cause = f"no answer within {self.timeout:g}s (--rm-timeout)"
                except httpx.TransportError as exc:
                    cause = f"{type(exc).__name__}: {exc}"
                    if isinstance(exc, httpx.ConnectError):
                        cause += " (is the reward server running at this address?)"
                else:
                    if response.status_code == 200:
                        return response
                    cause = f"HTTP {response.status_code}: {_detail(response)}"
                    if (response.status_code != 429 and response.status_code < 500) or not _retryable(response):
                        raise _failure(url, response, cause, start, n)
                    retry_after = _retry_after(response)
            if attempt == self.max_retries:
                break
            delay = min(MAX_DELAY, max(retry_after, self.retry_backoff * 2**attempt * random.uniform(0.5, 1.5)))
            log.warning("reward server %s: %s; retry %d/%d in %.2fs", url, cause, attempt + 1, self.max_retries, delay)
            time.sleep(delay)
        raise RewardError(f"{url}: no reward after {self.max_retries + 1} attempt"
                          f"{'s' if self.max_retries else ''}; last error: {cause}")

    @staticmethod
    def _answer(url: str, response: httpx.Response, n: int) -> RewardBatch:
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RewardError(f"{url}: the answer is not JSON: {response.text[:200]!r}") from None
        # Third-party servers may add keys of their own; the contract still checks one finite reward per query.
        return to_reward_batch(data, n, where=url, allow_extra_keys=True)

    def probe(self) -> bool:
        """Ask the first server's /health whether its rewards may be cached, and set `cacheable`: serve-rm says
        `"cacheable": false` for a pairwise reward; a server that does not say (or does not answer) is taken to
        be a per-text reward model, as OpenRLHF's is. Called once, by whoever opens the client for a run."""
        self.cacheable = True
        try:
            answer = self._client.get(self.urls[0].rsplit("/", 1)[0] + "/health", timeout=min(self.timeout, 10))
            self.cacheable = answer.json().get("cacheable", True) is not False
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        return self.cacheable

    def close(self) -> None:
        self._client.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def __getstate__(self) -> dict[str, Any]:
        """Ship the settings, not the connections (Ray actors rebuild the client)."""
        return {"urls": self.urls, "api_key": self.api_key, "timeout": self.timeout, "max_retries": self.max_retries,
                "retry_backoff": self.retry_backoff, "max_inflight": self.max_inflight, "cacheable": self.cacheable}

    def __setstate__(self, state: dict[str, Any]) -> None:
        cacheable = state.pop("cacheable")
        self.__init__(**state)  # type: ignore[misc]
        self.cacheable = cacheable

    def __repr__(self) -> str:
        return f"RemoteReward({self.urls!r})"


def _detail(response: httpx.Response) -> str:
    """The server's message: FastAPI's {"detail": ...} if there is one, else the start of the body."""
    try:
        body = response.json()
        if isinstance(body, dict) and "detail" in body:
            return str(body["detail"])
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    return response.text[:300] or response.reason_phrase


def _failure(url: str, response: httpx.Response, cause: str, start: int, n: int) -> RewardError:
    """The error for an answer not worth retrying. serve-rm's body names the failure's `kind` (and the sample's
    `index` within the request when it knows it): then a RewardFault with the index in the whole batch, so a
    trainer treats a NaN from a server as it treats one from a local reward (--skip-nonfinite-batches)."""
    message = f"{cause}{_hint(response.status_code)}"
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not (isinstance(body, dict) and isinstance(body.get("kind"), str)):
        return RewardError(f"{url}: {message}")
    index = body.get("index")
    known = isinstance(index, int) and not isinstance(index, bool) and 0 <= index < n
    return RewardFault(message, kind=body["kind"], where=url, index=index + start if known else None)


def _retryable(response: httpx.Response) -> bool:
    """False when the server says retrying cannot help (serve-rm's `"retryable": false`: the reward function
    failed or timed out on this very input)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return True
    return not (isinstance(body, dict) and body.get("retryable") is False)


def _hint(status: int) -> str:
    return {401: " (pass the server's key with --api-key or RLHFCTL_API_KEY)",
            404: " (is the path right? serve-rm answers on /get_reward)"}.get(status, "")


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return 0.0
