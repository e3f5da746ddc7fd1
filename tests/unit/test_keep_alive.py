"""The keep-alive race behind issue 12's lost request: a server closes an idle connection just as a client sends
its next request on it. bench-rm's client sends such a request again on a fresh connection and never reuses a
connection idle for long; serve-rm keeps idle connections open well past the clients' idle expiry."""

from __future__ import annotations

import asyncio
import http.client
import json
import time

from rlhfctl.bench import http as bench_http
from rlhfctl.bench.loadgen import run_level
from rlhfctl.bench.targets import HttpTarget
from rlhfctl.bench.workload import Request, Workload
from rlhfctl.config import ServeRMConfig
from rlhfctl.serving.app import create_app
from rlhfctl.serving.server import open_source, serve_in_thread
from rlhfctl.config.slices import AppGroups

ANSWER = json.dumps({"rewards": [0.5]}).encode()


async def racing_server(answered: list[int]) -> asyncio.AbstractServer:
    """Answers the first request of each connection, then reads the second and closes without an answer: what a
    client sees when the server's keep-alive timer fires as its request arrives."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for turn in range(2):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            if turn == 1:
                break
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(ANSWER)).encode() + b"\r\n\r\n" + ANSWER)
            await writer.drain()
            answered.append(1)
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def workload(n: int) -> Workload:
    body = json.dumps({"query": ["a text"]}).encode()
    return Workload([Request(["a text"], [""], [""], 2, body) for _ in range(n)], "test")


def test_a_request_that_loses_the_keep_alive_race_is_sent_again_on_a_fresh_connection():
    async def main():
        answered: list[int] = []
        server = await racing_server(answered)
        port = server.sockets[0].getsockname()[1]
        target = HttpTarget(f"http://127.0.0.1:{port}/get_reward", api_key=None, timeout=10)
        run = await run_level(target, workload(20), concurrency=1, num_requests=20)
        server.close()
        return run

    run = asyncio.run(main())
    assert run.completed == 20 and not run.errors, run.errors
    assert run.info["connections"] == 20  # every second request on a connection lost the race and was re-sent


def test_a_connection_idle_past_the_expiry_is_not_reused(monkeypatch):
    monkeypatch.setattr(bench_http, "IDLE_EXPIRY_S", 0.2)

    async def main():
        server = await racing_server([])
        port = server.sockets[0].getsockname()[1]
        client = bench_http.HttpClient(bench_http.Endpoint.parse(f"http://127.0.0.1:{port}/get_reward"))
        frame = client.frame(b'{"query": ["x"]}')
        first = await client.post(frame)
        await asyncio.sleep(0.3)
        second = await client.post(frame)
        client.close()
        server.close()
        return first, second, client.opened

    first, second, opened = asyncio.run(main())
    assert first[0] == second[0] == 200 and opened == 2


def test_serve_rm_keeps_an_idle_connection_open_past_uvicorns_default_keep_alive(tmp_path):
    path = tmp_path / "reward_func.py"
    path.write_text("def reward_func(q, p, l):\n    return [1.0] * len(q)\n")
    cfg = ServeRMConfig(reward_func=str(path))
    source = open_source(cfg)
    try:
        with serve_in_thread(create_app(source, AppGroups.of(cfg))) as handle:
            conn = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=10)
            statuses = []
            for pause in (0.0, 5.5):  # uvicorn's default would close the connection after 5 s idle
                time.sleep(pause)
                conn.request("POST", "/get_reward", body=b'{"query": ["x"]}',
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                statuses.append(response.status)
            conn.close()
    finally:
        source.close()
    assert statuses == [200, 200]  # http.client does not reconnect: the same connection answered both
