"""What bench-rm measures, behind one small interface: an HTTP reward server, or a reward source in this process.

A target's `send(request)` returns when the request was answered correctly and raises RequestFailed with a
stable kind otherwise: `http_<status>`, `timeout`, `connection`, `malformed` (not JSON, wrong count, non-finite
reward) or, in-process, `error`. The load generator counts kinds; it never has to know where rewards come from.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any, Protocol

from rlhfctl.bench.http import Endpoint, HttpClient, ProtocolFault
from rlhfctl.bench.workload import Request
from rlhfctl.errors import RewardError
from rlhfctl.rewards.contract import RewardFault, to_reward_batch

CONNECT_PROBE_S = 5.0  # an unreachable --url fails within this many seconds
_CONTRACT_KINDS = {"length", "shape", "nan", "non_number", "type", "dict_keys", "extra_logs"}


class RequestFailed(Exception):
    """One request's failure: `kind` is what the figures count, the message an example shown to the user."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Target(Protocol):
    """Opened once per concurrency level (`open`), closed after it (`close`)."""

    name: str
    local_cpu: bool  # True: scoring runs in this process, so its CPU time is not the load generator's alone

    async def open(self) -> None: ...

    async def send(self, request: Request) -> None: ...

    async def close(self) -> dict[str, Any]: ...


def check_answer(value: Any, n: int) -> None:
    """One finite reward per query, or RequestFailed('malformed')."""
    try:
        to_reward_batch(value, n, where="answer", allow_extra_keys=True)
    except RewardFault as exc:
        raise RequestFailed("malformed", exc.problem) from None


class HttpTarget:
    """A reward server at a URL speaking OpenRLHF's /get_reward, through a pool of keep-alive connections."""

    local_cpu = False

    def __init__(self, url: str, *, api_key: str | None, timeout: float) -> None:
        self.endpoint = Endpoint.parse(url)
        self.name = self.endpoint.url
        self.api_key = api_key
        self.timeout = timeout
        self._client: HttpClient | None = None
        self._framed: dict[int, bytes] = {}

    def probe(self) -> None:
        """Fail within seconds, with a message, when nothing listens at the URL."""
        e = self.endpoint
        try:
            socket.create_connection((e.host, e.port), timeout=min(CONNECT_PROBE_S, self.timeout)).close()
        except socket.gaierror as exc:
            raise RewardError(f"cannot reach {e.url}: unknown host {e.host!r} ({exc.strerror})") from None
        except (TimeoutError, socket.timeout):
            raise RewardError(f"cannot reach {e.url}: no answer to a connection within "
                              f"{min(CONNECT_PROBE_S, self.timeout):g}s") from None
        except OSError as exc:
            raise RewardError(f"cannot reach {e.url}: {exc.strerror or exc} (is a reward server running there? "
                              "`rlhfctl serve-rm` starts one)") from None

    async def open(self) -> None:
        self._client = HttpClient(self.endpoint, api_key=self.api_key, timeout=self.timeout)

    async def send(self, request: Request) -> None:
        client = self._client
        assert client is not None, "open() the target first"
        data = self._framed.get(id(request))
        if data is None:
            data = self._framed[id(request)] = client.frame(request.body)
        try:
            status, body = await client.post(data)
        except (TimeoutError, asyncio.TimeoutError) as exc:  # distinct classes before Python 3.11
            raise RequestFailed("timeout", str(exc) or "no answer within the timeout") from None
        except ProtocolFault as exc:
            raise RequestFailed("malformed", f"not an HTTP answer: {exc}") from None
        except OSError as exc:
            raise RequestFailed("connection", exc.strerror or str(exc) or type(exc).__name__) from None
        if status != 200:
            raise RequestFailed(f"http_{status}", body[:300].decode("utf-8", "replace"))
        try:
            value = json.loads(body)
        except ValueError:
            raise RequestFailed("malformed", f"the answer is not JSON: {body[:80]!r}") from None
        check_answer(value, request.size)

    async def close(self) -> dict[str, Any]:
        opened = self._client.opened if self._client else 0
        resent = self._client.resent if self._client else 0
        if self._client is not None:
            self._client.close()
            self._client = None
        return {"connections": opened, "resent": resent}


class InProcessTarget:
    """A reward source called in this process through serve-rm's own scorer (its dynamic batcher for a model, a
    thread pool for a reward_func), minus HTTP and JSON: the ceiling a server's figures compare with."""

    local_cpu = True

    def __init__(self, scorer: Any, name: str) -> None:
        self.scorer = scorer
        self.name = f"in-process {name}"

    async def open(self) -> None:
        return None

    async def send(self, request: Request) -> None:
        try:
            batch = await self.scorer.score(request.queries, request.prompts, request.labels)
        except RewardFault as exc:
            kind = "malformed" if exc.kind in _CONTRACT_KINDS else ("timeout" if exc.kind == "timeout" else "error")
            raise RequestFailed(kind, str(exc)) from None
        except Exception as exc:  # the source's own failure, measured like a server's 500
            raise RequestFailed("error", f"{type(exc).__name__}: {exc}") from None
        check_answer(batch.rewards, request.size)

    async def close(self) -> dict[str, Any]:
        return {}
