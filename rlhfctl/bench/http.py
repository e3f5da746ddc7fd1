"""A lean HTTP/1.1 keep-alive client for the load generator: POST a prepared body, get (status, body) back.

Why not httpx: on this project's machines httpx.AsyncClient spent about 700 us of CPU per request (uvloop) and
reached ~1.1k requests/s on a core, while the trivial reference endpoint takes ~10k/s from wrk. A load generator
that slow measures itself. This client does only what a reward benchmark needs, on asyncio protocols: one
request at a time per connection (no pipelining), bodies prepared once, responses framed by Content-Length,
chunked encoding or connection close, and connections kept and reused. It costs ~20 us of CPU per request.

Keep-alive has a race every HTTP client must handle: a server closes a connection that was idle for its keep-alive
timeout (uvicorn's default is 5 s) just as the client sends the next request on it, and the request gets no answer.
So an idle connection is dropped after IDLE_EXPIRY_S (below that timeout), and a request on a reused connection that
is closed before any byte of its answer arrives is sent once more on a fresh connection (a POST /get_reward can be:
scoring has no side effects). Without this, 1 request in 20,000 went unanswered in a soak test (issue 12).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from rlhfctl.errors import UsageError

MAX_HEAD = 64 * 1024  # bytes of status line + headers before a response is called malformed
IDLE_EXPIRY_S = 4.0  # an idle connection older than this is not reused (uvicorn closes them at 5 s by default)


class ProtocolFault(Exception):
    """The peer answered something that is not HTTP/1.x."""


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: scheme, host, port and path of one URL."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> "Endpoint":
        """`http(s)://HOST[:PORT]/PATH`, checked by the reward client's rules (a bare host gets /get_reward)."""
        from rlhfctl.rewards.remote import parse_urls

        checked = parse_urls(url)
        if len(checked) != 1:
            raise UsageError(f"{url!r}: one URL here (bench-rm --url takes several, comma-separated, as replicas)")
        parts = urlsplit(checked[0])
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise UsageError(f"--url {url!r}: the port is not a number from 0 to 65535") from None
        if not parts.hostname:
            raise UsageError(f"--url {url!r} has no host (expected http://HOST:PORT/get_reward)")
        path = parts.path + ("?" + parts.query if parts.query else "")
        return cls(parts.scheme, parts.hostname, port, path)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    def request_head(self, api_key: str | None) -> bytes:
        """Everything of a POST before its Content-Length value: built once, reused for every request."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {host}:{self.port}", "Content-Type: application/json",
                 "Accept: application/json"]
        if api_key:
            lines.append(f"Authorization: Bearer {api_key}")
        return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")


class _Connection(asyncio.Protocol):
    """One keep-alive connection: write a request, parse exactly one response, repeat."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.answered_any = False  # a byte of the current request's answer has arrived
        self.idle_since = time.monotonic()
        self._buf = bytearray()
        self._waiter: asyncio.Future | None = None
        self._reset()

    def _reset(self) -> None:
        self._status = 0
        self._head_done = False
        self._length: int | None = None  # Content-Length, or None
        self._chunked = False
        self._keep_alive = True

    # asyncio callbacks -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self.answered_any = True
        if self._waiter is None:
            return
        try:
            body = self._parse()
        except ProtocolFault as exc:
            self._fail(exc)
            return
        if body is not None:
            waiter, self._waiter = self._waiter, None
            status, keep = self._status, self._keep_alive
            self._reset()
            if not keep:
                self.close()
            if not waiter.done():
                waiter.set_result((status, body))

    def eof_received(self) -> bool:
        # The peer will send no more: never reuse this connection. A response framed by the connection's end (no
        # length, not chunked) is complete here.
        self.closed = True
        if self._waiter is not None and self._head_done and self._length is None and not self._chunked:
            waiter, self._waiter = self._waiter, None
            if not waiter.done():
                waiter.set_result((self._status, bytes(self._buf)))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionResetError("the server closed the connection") if exc is None else exc)

    # requests ----------------------------------------------------------------------------------------
    async def request(self, data: bytes, timeout: float) -> tuple[int, bytes]:
        """Send one request (all its bytes) and wait for its response; TimeoutError after `timeout` seconds."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        loop = asyncio.get_running_loop()
        self.answered_any = False
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout, self._expire, waiter, timeout)
        self.transport.write(data)
        try:
            return await waiter
        finally:
            timer.cancel()

    def _expire(self, waiter: asyncio.Future, timeout: float) -> None:
        if waiter is self._waiter:
            self._fail(TimeoutError(f"no answer within {timeout:g}s"))

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # parsing -----------------------------------------------------------------------------------------
    def _parse(self) -> bytes | None:
        """The body once the whole response is in the buffer, else None (wait for more data)."""
        while not self._head_done:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD:
                    raise ProtocolFault(f"no end of headers in the first {MAX_HEAD} bytes")
                return None
            head = bytes(self._buf[:end]).split(b"\r\n")
            del self._buf[: end + 4]
            self._read_head(head)
        if self._chunked:
            return self._parse_chunks()
        if self._length is None:
            return None  # framed by the connection's end: eof_received finishes it
        if len(self._buf) < self._length:
            return None
        body = bytes(self._buf[: self._length])
        del self._buf[: self._length]
        return body

    def _read_head(self, head: list[bytes]) -> None:
        status_line = head[0].split(b" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1.") or not status_line[1].isdigit():
            raise ProtocolFault(f"not an HTTP/1.x status line: {head[0][:80]!r}")
        status = int(status_line[1])
        if 100 <= status < 200:
            return  # an interim answer (100 Continue): the real one follows
        self._status = status
        self._head_done = True
        self._keep_alive = status_line[0] != b"HTTP/1.0"
        for line in head[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    self._length = int(value.strip())
                except ValueError:
                    raise ProtocolFault(f"bad Content-Length {value.strip()[:40]!r}") from None
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
            elif name == b"connection":
                token = value.strip().lower()
                self._keep_alive = b"keep-alive" in token if status_line[0] == b"HTTP/1.0" else b"close" not in token
        if self._chunked:
            self._length = None
        elif self._length is None:
            self._keep_alive = False  # the body runs to the connection's end

    def _parse_chunks(self) -> bytes | None:
        buf = self._buf
        pos = 0
        chunks: list[bytes] = []
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolFault(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                if buf[eol + 2: eol + 4] == b"\r\n":
                    end = eol + 4
                else:  # trailers, then an empty line
                    trailers_end = buf.find(b"\r\n\r\n", eol + 2)
                    if trailers_end < 0:
                        return None
                    end = trailers_end + 4
                del buf[:end]
                return b"".join(chunks)
            start = eol + 2
            if len(buf) < start + size + 2:
                return None
            chunks.append(bytes(buf[start: start + size]))
            pos = start + size + 2


class HttpClient:
    """A pool of keep-alive connections to one endpoint; `post(body)` is safe from many tasks at once.

    Each request takes an idle connection or opens one, so the pool grows to the number of requests in flight
    and no further; `opened` counts connections made, which shows that they are reused.
    """

    def __init__(self, endpoint: Endpoint, *, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.opened = 0
        self.resent = 0  # requests sent again after losing the keep-alive race
        self._head = endpoint.request_head(api_key)
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._ssl = ssl.create_default_context() if endpoint.scheme == "https" else None

    def frame(self, body: bytes) -> bytes:
        """The bytes of one POST carrying `body` (callers frame their bodies once, ahead of the run)."""
        return self._head + str(len(body)).encode() + b"\r\n\r\n" + body

    async def post(self, request: bytes) -> tuple[int, bytes]:
        """Send a request made by `frame` and return (status, body). Raises OSError subclasses for connection
        failures, TimeoutError when no complete answer comes within the timeout, ProtocolFault for garbage."""
        conn, reused = await self._acquire()
        try:
            result = await conn.request(request, self.timeout)
        except ConnectionError:
            self._drop(conn)
            if not reused or conn.answered_any:
                raise
            # The keep-alive race: the server closed this idle connection as the request went out. Once more on a
            # fresh connection.
            self.resent += 1
            conn, _ = await self._acquire(fresh=True)
            try:
                result = await conn.request(request, self.timeout)
            except BaseException:
                self._drop(conn)
                raise
        except BaseException:
            self._drop(conn)
            raise
        if conn.closed:
            self._all.discard(conn)
        else:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        return result

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        self._all.discard(conn)

    async def _acquire(self, fresh: bool = False) -> tuple[_Connection, bool]:
        """A connection and whether it was used before: the newest idle one that is open and idle for less than
        IDLE_EXPIRY_S, else a new one."""
        now = time.monotonic()
        while self._idle and not fresh:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_EXPIRY_S:
                return conn, True
            self._drop(conn)
        loop = asyncio.get_running_loop()
        e = self.endpoint
        _, conn = await asyncio.wait_for(
            loop.create_connection(_Connection, e.host, e.port, ssl=self._ssl), self.timeout
        )
        self.opened += 1
        self._all.add(conn)
        return conn, False

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._idle.clear()
