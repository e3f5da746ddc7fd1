"""RemoteReward: the client of a reward server speaking OpenRLHF's /get_reward (serve-rm or any compatible one).

Several URLs are replicas of one reward. A batch is cut into contiguous chunks, one per live replica (never an
empty one, never inside a prompt's group: a pairwise server compares the samples of one prompt), and each chunk
goes to the live replica with the fewest requests in flight, over a pooled connection. A replica that refuses the
connection, times out or answers 5xx is taken out and the chunk is sent to another at once; a /health probe brings
it back (rewards/replicas.py). A 429, or a 503 with Retry-After (a full queue), is busy, not down: the chunk tries
another replica and this one stays in. When every replica has failed a chunk, it waits with exponential backoff and
jitter (Retry-After if longer) and tries again, --rm-max-retries times; a 4xx (our request is wrong) fails at once.
A failure is never a reward of 0: it raises RewardError naming the servers and the causes. `score()` is
synchronous and thread-safe, so plain code, thread pools and Ray actors use it alike; `max_inflight` caps requests
in flight over all threads.
"""

from __future__ import annotations

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
from rlhfctl.rewards.replicas import ReplicaSet, ReplicaState

if TYPE_CHECKING:
    from rlhfctl.config import AuthArgs, RemoteRewardArgs

log = logging.getLogger(__name__)
MAX_DELAY = 60.0  # seconds; a Retry-After or a long backoff never sleeps longer than this
IDLE_EXPIRY_S = 4.0  # an idle pooled connection is closed after this long
PROBE_TIMEOUT_S = 5.0  # a /health probe of an out replica that takes longer counts as a failed probe


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
                 max_retries: int = 5, retry_backoff: float = 0.5, max_inflight: int = 32,
                 health_interval: float = 5.0) -> None:
        self.urls = parse_urls(urls)
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_inflight = max_inflight
        self.health_interval = health_interval
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
        self.replicas = ReplicaSet(self.urls, health_interval, self._healthy)
        # Chunks beyond the first go to this pool (the caller sends the first); sized like the in-flight cap so
        # many threads calling score() at once are limited by max_inflight only.
        self._pool = ThreadPoolExecutor(max_inflight, thread_name_prefix="reward-shard") if len(self.urls) > 1 \
            else None

    @classmethod
    def from_config(cls, remote: RemoteRewardArgs, auth: AuthArgs, urls: str | Sequence[str], *,
                    timeout: float | None = None) -> "RemoteReward":
        """A client for `urls` with the reward client options and --api-key; `timeout` overrides --rm-timeout."""
        return cls(urls, api_key=auth.api_key, timeout=timeout or remote.rm_timeout,
                   max_retries=remote.rm_max_retries, retry_backoff=remote.rm_retry_backoff,
                   max_inflight=remote.rm_max_inflight, health_interval=remote.rm_health_interval)

    def score(self, queries: list[str], prompts: list[str] | None = None,
              labels: list[str] | None = None) -> RewardBatch:
        n = len(queries)
        prompts = [""] * n if prompts is None else list(prompts)
        labels = [""] * n if labels is None else list(labels)
        if (empty := check_batch(queries, prompts, labels)) is not None:
            return empty
        jobs = [({"query": list(queries[s]), "prompts": prompts[s], "labels": labels[s]}, s.start)
                for s in group_shards(prompts, max(1, self.replicas.up_count()))]
        if len(jobs) == 1 or self._pool is None:
            answers = [self._post_chunk(*jobs[0])]
        else:
            futures = [self._pool.submit(self._post_chunk, *job) for job in jobs[1:]]
            try:
                head = self._post_chunk(*jobs[0])
            except BaseException:
                wait(futures)  # no chunk left running behind the caller's back
                raise
            answers = [head, *(f.result() for f in futures)]
        batch = RewardBatch.concat([answer for answer, _ in answers])
        if len(self.urls) > 1:
            batch.extra_logs.update(self._replica_logs([(len(a), i) for a, i in answers]))
        return batch

    def _replica_logs(self, chunks: list[tuple[int, int]]) -> dict[str, list[float]]:
        """Per sample: 1.0 under replica<i>_share for the replica that scored it (a batch's mean is that replica's
        share), and how many replicas are up (train-ppo logs both as reward/...)."""
        logs = {f"replica{i}_share": [float(i == index) for size, index in chunks for _ in range(size)]
                for i in range(len(self.urls))}
        logs["replicas_up"] = [float(self.replicas.up_count())] * sum(size for size, _ in chunks)
        return logs

    def _post_chunk(self, payload: dict[str, list[str]], start: int) -> tuple[RewardBatch, int]:
        """One chunk, scored by one replica (failing over to the others), and that replica's index. `start` is the
        chunk's place in the whole batch, where a failing sample's index is counted from."""
        n = len(payload["query"])
        tried: set[int] = set()
        causes: dict[str, str] = {}
        waits, retry_after = 0, 0.0
        while True:
            replica = self.replicas.acquire(tried)
            if replica is None and not tried:  # every replica is out: try the least busy now, as a lone server
                replica = self.replicas.acquire(any_state=True)
            if replica is None:  # every replica is out or failed this chunk: back off, then try the least busy
                if waits == self.max_retries:
                    raise self._exhausted(causes)
                self._sleep(waits, retry_after, "; ".join(f"{u}: {c}" for u, c in causes.items()))
                waits, retry_after = waits + 1, 0.0
                tried.clear()
                replica = self.replicas.acquire(any_state=True)
                assert replica is not None
            try:
                response = self._attempt(replica.url, payload, start, n)
            except _Unanswered as exc:
                self.replicas.release(replica)
                tried.add(replica.index)
                causes[replica.url] = exc.cause
                retry_after = max(retry_after, exc.retry_after)
                if exc.down:
                    self.replicas.take_out(replica, exc.cause)
                continue
            except BaseException:
                self.replicas.release(replica)
                raise
            try:
                batch = self._answer(replica.url, response, n)
            except BaseException:
                self.replicas.release(replica)
                raise
            self.replicas.release(replica, answered=n)
            return batch, replica.index

    def _exhausted(self, causes: dict[str, str]) -> RewardError:
        attempts = f"{self.max_retries + 1} attempt{'s' if self.max_retries else ''}"
        if len(self.urls) == 1:
            return RewardError(f"{self.urls[0]}: no reward after {attempts}; last error: {causes[self.urls[0]]}")
        listed = "; ".join(f"{s.url}: {causes.get(s.url, s.cause or 'out')}" for s in self.replicas.states())
        return RewardError(f"no replica could score the batch ({attempts} over {len(self.urls)} replicas); last "
                           f"errors: {listed}")

    def _sleep(self, attempt: int, retry_after: float, cause: str) -> None:
        delay = min(MAX_DELAY, max(retry_after, self.retry_backoff * 2**attempt * random.uniform(0.5, 1.5)))
        log.warning("reward server %s; retry %d/%d in %.2fs", cause, attempt + 1, self.max_retries, delay)
        time.sleep(delay)

    def send(self, url: str, payload: dict[str, Any], start: int = 0, n: int = 1,
             pace: Callable[[], None] | None = None) -> httpx.Response:
        """POST `payload` as JSON to one `url` with this client's retries, backoff, timeout and in-flight cap; the
        200 answer, or RewardError naming the cause (for other JSON APIs: the LLM judge's chat client). `pace()`,
        if given, is called before each attempt (a requests-per-minute limit)."""
        for attempt in range(self.max_retries + 1):
            if pace is not None:
                pace()
            try:
                return self._attempt(url, payload, start, n)
            except _Unanswered as exc:
                if attempt == self.max_retries:
                    raise self._exhausted({url: exc.cause}) from None
                self._sleep(attempt, exc.retry_after, f"{url}: {exc.cause}")
        raise AssertionError("unreachable")

    def _attempt(self, url: str, payload: dict[str, Any], start: int, n: int) -> httpx.Response:
        """One POST under the in-flight cap: the 200 answer; _Unanswered when another try may pass (on this server
        or another); RewardError when none can (a 4xx, or the server says the input itself fails)."""
        with self._slots:
            try:
                response = self._client.post(url, json=payload)
            except httpx.TimeoutException:
                raise _Unanswered(f"no answer within {self.timeout:g}s (--rm-timeout)", down=True) from None
            except httpx.TransportError as exc:
                cause = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, httpx.ConnectError):
                    cause += " (is the reward server running at this address?)"
                raise _Unanswered(cause, down=True) from None
        status = response.status_code
        if status == 200:
            return response
        cause = f"HTTP {status}: {_detail(response)}"
        if (status != 429 and status < 500) or not _retryable(response):
            raise _failure(url, response, cause, start, n)
        retry_after = _retry_after(response)
        busy = status == 429 or (status == 503 and "retry-after" in response.headers)
        raise _Unanswered(cause, down=not busy, retry_after=retry_after)

    @staticmethod
    def _answer(url: str, response: httpx.Response, n: int) -> RewardBatch:
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RewardError(f"{url}: the answer is not JSON: {response.text[:200]!r}") from None
        # Third-party servers may add keys of their own; the contract still checks one finite reward per query.
        return to_reward_batch(data, n, where=url, allow_extra_keys=True)

    def _healthy(self, url: str) -> bool:
        """Whether the replica at `url` answers its GET /health with 200 (serve-rm has one; the probe that brings a
        replica back)."""
        try:
            return self._client.get(_health_url(url), timeout=min(self.timeout, PROBE_TIMEOUT_S)).status_code == 200
        except httpx.HTTPError:
            return False

    def probe(self) -> bool:
        """Ask the first server's /health whether its rewards may be cached, and set `cacheable`: serve-rm says
        `"cacheable": false` for a pairwise reward; a server that does not say (or does not answer) is taken to
        be a per-text reward model, as OpenRLHF's is. Called once, by whoever opens the client for a run."""
        self.cacheable = True
        try:
            answer = self._client.get(_health_url(self.urls[0]), timeout=min(self.timeout, 10))
            self.cacheable = answer.json().get("cacheable", True) is not False
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        return self.cacheable

    def replica_states(self) -> list[ReplicaState]:
        return self.replicas.states() if len(self.urls) > 1 else []

    def close(self) -> None:
        self.replicas.close()
        self._client.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def __getstate__(self) -> dict[str, Any]:
        """Ship the settings, not the connections (Ray actors rebuild the client)."""
        return {"urls": self.urls, "api_key": self.api_key, "timeout": self.timeout, "max_retries": self.max_retries,
                "retry_backoff": self.retry_backoff, "max_inflight": self.max_inflight,
                "health_interval": self.health_interval, "cacheable": self.cacheable}

    def __setstate__(self, state: dict[str, Any]) -> None:
        cacheable = state.pop("cacheable")
        self.__init__(**state)  # type: ignore[misc]
        self.cacheable = cacheable

    def __repr__(self) -> str:
        return f"RemoteReward({self.urls!r})"


class _Unanswered(Exception):
    """An attempt that another may pass: `down` when the replica should be taken out (not for a busy one)."""

    def __init__(self, cause: str, *, down: bool, retry_after: float = 0.0) -> None:
        super().__init__(cause)
        self.cause = cause
        self.down = down
        self.retry_after = retry_after


def _health_url(url: str) -> str:
    return url.rsplit("/", 1)[0] + "/health"


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
