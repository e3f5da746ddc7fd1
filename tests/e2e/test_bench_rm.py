"""bench-rm against real servers on free loopback ports: a FastAPI app that fails a known share of requests, a raw
asyncio server for the HTTP framing cases, and serve-rm itself (reward_func and tiny reward model)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fastapi import FastAPI, Request, Response

from rlhfctl.net import free_port
from rlhfctl.bench.workload import synthetic_texts
from tests.helpers import ENV, GALLERY, ROOT, rlhfctl, run_cli


def bench_rm(args: list[str], capsys) -> tuple[int, str, str]:
    return run_cli(["bench-rm", *args], capsys)


def run_json(args: list[str], capsys, expect: int = 0) -> dict:
    code, out, err = bench_rm([*args, "--json"], capsys)
    assert code == expect, err
    assert "Traceback" not in err
    return json.loads(out)


# ------------------------------------------------------------------------------------------ servers
class FailingServer:
    """A FastAPI /get_reward that answers request i (in arrival order) by a fixed pattern, and records it:
    i % 5 == 4 -> 503; else i % 7 == 6 -> one reward too many; else i % 11 == 10 -> a NaN reward; else ok."""

    def __init__(self) -> None:
        self.outcomes: list[str] = []
        self.lock = threading.Lock()
        app = FastAPI()

        @app.post("/get_reward")
        async def get_reward(request: Request) -> Response:
            n = len((await request.json())["query"])
            with self.lock:
                i = len(self.outcomes)
                kind = ("http_503" if i % 5 == 4 else "malformed" if i % 7 == 6 or i % 11 == 10 else "ok")
                self.outcomes.append(kind)
            if kind == "http_503":
                return Response('{"detail": "busy"}', status_code=503, media_type="application/json")
            rewards = [0.5] * (n + 1 if i % 7 == 6 else n)
            if i % 11 == 10 and i % 7 != 6:
                rewards[0] = math.nan
            return Response(json.dumps({"rewards": rewards}), media_type="application/json")

        self.app = app

    def expected(self, start: int, count: int) -> dict[str, int]:
        kinds: dict[str, int] = {}
        for kind in self.outcomes[start: start + count]:
            if kind != "ok":
                kinds[kind] = kinds.get(kind, 0) + 1
        return kinds


@pytest.fixture
def failing_server():
    from rlhfctl.serving.server import serve_in_thread

    server = FailingServer()
    with serve_in_thread(server.app) as handle:
        yield server, handle.url


class RawServer:
    """A bare asyncio HTTP/1.1 server for framing cases: request i is answered per `script(i)`:
    "length" (Content-Length), "chunked", "close" (connection closed, no answer), "garbage", "slow" (1 s late)."""

    def __init__(self, script) -> None:
        self.script = script
        self.count = 0
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        ready.set()
        self.loop.run_forever()
        server.close()
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(asyncio.sleep(0.01))  # let the closed transports finish closing
        self.loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                n = len(json.loads(await reader.readexactly(length))["query"])
                mode = self.script(self.count)
                self.count += 1
                body = json.dumps({"rewards": [1.0] * n}).encode()
                if mode == "close":
                    writer.close()
                    return
                if mode == "garbage":
                    writer.write(b"SMTP ready\r\n\r\n")
                elif mode == "eof":  # no length: the body ends with the connection
                    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)
                    await writer.drain()
                    writer.close()
                    return
                elif mode == "chunked":
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:5], body[5:]))
                                 + b"0\r\n\r\n")
                else:
                    if mode == "slow":
                        await asyncio.sleep(1.0)
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/get_reward"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def check_level_arithmetic(level: dict, batch_size: int, num_requests: int | None) -> None:
    """Requests sent = ok + failed; throughputs = counts / wall time; latency order."""
    if num_requests is not None:
        assert level["completed"] + level["failed"] == num_requests
    assert sum(level["errors"].values()) == level["failed"]
    assert level["total_samples"] == level["completed"] * batch_size
    duration = level["duration"]
    assert duration > 0
    assert level["request_throughput"] == pytest.approx(level["completed"] / duration, rel=1e-3)
    assert level["sample_throughput"] == pytest.approx(level["total_samples"] / duration, rel=1e-3)
    assert level["total_token_throughput"] == pytest.approx(level["total_input_tokens"] / duration, rel=1e-3)
    if level["completed"]:
        assert level["median_e2el_ms"] <= level["p90_e2el_ms"] <= level["p99_e2el_ms"] <= level["max_e2el_ms"]


# ------------------------------------------------------------------------------------------ workload
def test_synthetic_texts_are_deterministic_and_in_range():
    a = synthetic_texts(50, 5, 20, seed=1)
    assert a == synthetic_texts(50, 5, 20, seed=1)
    assert a != synthetic_texts(50, 5, 20, seed=2)
    for prompt, query in a:
        assert 5 <= len(query.split()) <= 20
        assert query.startswith(prompt)


# ------------------------------------------------------------------------------------------ error accounting
def test_counts_match_the_servers_failure_pattern(failing_server, capsys):
    server, url = failing_server
    warmup, n = 3, 77
    started = time.perf_counter()
    result = run_json(["--url", url, "--concurrency", "1,4", "--num-requests", str(n), "--warmup", str(warmup),
                       "--texts-per-request", "3", "--max-error-rate", "1"], capsys)
    assert sum(lv["duration"] for lv in result["levels"]) < time.perf_counter() - started  # measured wall time
    assert [lv["concurrency"] for lv in result["levels"]] == [1, 4]
    position = 0
    for level in result["levels"]:
        check_level_arithmetic(level, 3, n)
        position += warmup  # warm-up requests reach the server first and are not counted
        assert level["errors"] == server.expected(position, n)
        position += n
        assert level["connections"] <= level["concurrency"]  # connections are reused
        assert set(level["error_examples"]) == set(level["errors"])
    assert len(server.outcomes) == position
    assert result["mode"] == "url" and result["settings"]["texts_per_request"] == 3


def test_max_error_rate_sets_the_exit_code(failing_server, capsys):
    _, url = failing_server
    args = ["--url", url, "--concurrency", "2", "--num-requests", "40", "--warmup", "0"]
    code, out, err = bench_rm([*args, "--max-error-rate", "0.1"], capsys)
    assert code == 1
    assert "--max-error-rate 0.1" in err and "http_503" in err and "Traceback" not in err
    assert "concurrency" in out  # the figures are still reported
    code, _, err = bench_rm([*args, "--max-error-rate", "0.9"], capsys)
    assert code == 0, err


def test_json_output_file_and_plot(failing_server, tmp_path, capsys):
    _, url = failing_server
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    code, out, err = bench_rm(["--url", url, "--concurrency", "1,2,4", "--num-requests", "20", "--warmup", "1",
                              "--max-error-rate", "1", "--output", str(out_json), "--plot", str(out_png)], capsys)
    assert code == 0, err
    saved = json.loads(out_json.read_text())
    assert [lv["concurrency"] for lv in saved["levels"]] == [1, 2, 4]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "req/s" in out and "p99" in out


def test_client_bound_warning():
    from rlhfctl.bench.loadgen import LevelRun
    from rlhfctl.bench.stats import client_bound_warning, summarize

    busy = summarize(LevelRun(64, latencies=[0.01] * 10, duration=2.0, cpu=1.9))
    idle = summarize(LevelRun(64, latencies=[0.01] * 10, duration=2.0, cpu=0.2))
    assert busy.client_cpu == pytest.approx(0.95)
    assert "load generator" in client_bound_warning(busy) and client_bound_warning(idle) is None


# ------------------------------------------------------------------------------------------ bad input
def test_unreachable_url_fails_within_seconds(capsys):
    started = time.monotonic()
    code, _, err = bench_rm(["--url", f"http://127.0.0.1:{free_port()}/get_reward"], capsys)
    assert code == 1
    assert time.monotonic() - started < 5
    assert "cannot reach" in err and "Traceback" not in err


@pytest.mark.parametrize("args, needle", [
    (["--url", "ftp://x/get_reward"], "not a reward server URL"),
    (["--url", "http://127.0.0.1:1,ftp://x"], "not a reward server URL"),
    (["--url", "http://127.0.0.1:1", "--output", "/no/such/folder/x.json"], "--output"),
    (["--url", "http://127.0.0.1:1", "--concurrency", "0"], "--concurrency"),
    (["--url", "http://127.0.0.1:1", "--prompt-data", "/no/such/data.jsonl"], "no such file"),
])
def test_bad_input_exits_2(args, needle, capsys):
    code, out, err = bench_rm(args, capsys)
    assert code == 2
    assert needle in err and "Traceback" not in err + out


def test_several_replicas_each_ones_share(capsys):
    """--url URL1,URL2: ties rotate, so one request at a time splits evenly; with several in flight, the replica
    that answers sooner takes more; each replica's share is in the JSON and the table."""
    import asyncio
    from contextlib import ExitStack

    from rlhfctl.serving.server import serve_in_thread

    def replica(delay: float) -> FastAPI:
        app = FastAPI()

        @app.post("/get_reward")
        async def get_reward(request: Request) -> Response:
            n = len((await request.json())["query"])
            await asyncio.sleep(delay)
            return Response(json.dumps({"rewards": [0.5] * n}), media_type="application/json")
        return app

    with ExitStack() as stack:
        urls = [stack.enter_context(serve_in_thread(replica(delay))).url for delay in (0.0, 0.2)]
        args = ["--url", ",".join(urls), "--concurrency", "1,4", "--num-requests", "40", "--warmup", "0",
                "--texts-per-request", "2"]
        result = run_json(args, capsys)
        for level in result["levels"]:
            assert level["failed"] == 0
            assert [r["url"] for r in level["replicas"]] == urls
            assert sum(r["samples"] for r in level["replicas"]) == 80
        one_at_a_time, four = ([r["share"] for r in level["replicas"]] for level in result["levels"])
        assert one_at_a_time == [0.5, 0.5]
        assert four[0] > 0.6 > four[1] > 0
        code, out, err = bench_rm(args, capsys)
        assert code == 0, err
        assert "replica shares" in out and urls[1] in out


# ------------------------------------------------------------------------------------------ framing and kinds
def test_http_framing_and_failure_kinds(capsys):
    modes = ["length", "chunked", "close", "length", "garbage", "chunked", "eof"]
    server = RawServer(lambda i: modes[i % len(modes)])
    try:
        result = run_json(["--url", server.url, "--concurrency", "1", "--num-requests", "35", "--warmup", "0",
                           "--max-error-rate", "1"], capsys)
    finally:
        server.stop()
    level = result["levels"][0]
    check_level_arithmetic(level, 1, 35)
    assert (level["completed"], level["errors"], level["connections"], level["resent"]) == client_model(modes, 35)
    assert level["resent"] > 0 and level["errors"]["malformed"] > 0


def client_model(modes: list[str], n: int) -> tuple[int, dict[str, int], int, int]:
    """What bench-rm's client should make of `n` requests to a RawServer answering in `modes` (in turn): Content-Length,
    chunked and close-delimited ("eof") answers parse; one connection is reused until the server ends one, a new one
    opens for the request after that; a reused connection closed with no answer ("close") is the keep-alive race, so
    the request goes once more on a fresh connection (and takes the server's next mode); garbage is malformed."""
    turn, completed, errors, opened, resent, fresh_needed, reused = 0, 0, {}, 0, 0, True, False
    for _ in range(n):
        if fresh_needed:
            opened, fresh_needed, reused = opened + 1, False, False
        mode, turn = modes[turn % len(modes)], turn + 1
        if mode == "close" and reused:
            resent, opened, reused = resent + 1, opened + 1, False
            mode, turn = modes[turn % len(modes)], turn + 1
        if mode in ("length", "chunked", "eof"):
            completed += 1
            reused, fresh_needed = True, mode == "eof"
        else:
            kind = "malformed" if mode == "garbage" else "connection"
            errors[kind] = errors.get(kind, 0) + 1
            fresh_needed = True
    return completed, errors, opened, resent


def test_timeouts_are_counted(capsys):
    server = RawServer(lambda i: "slow" if i % 4 == 3 else "length")
    try:
        result = run_json(["--url", server.url, "--concurrency", "1", "--num-requests", "8", "--warmup", "0",
                           "--rm-timeout", "0.3", "--max-error-rate", "1"], capsys)
    finally:
        server.stop()
    assert result["levels"][0]["errors"] == {"timeout": 2}


def test_open_loop_and_duration(failing_server, capsys):
    _, url = failing_server
    result = run_json(["--url", url, "--concurrency", "8", "--request-rate", "200", "--num-requests", "100",
                       "--warmup", "0", "--max-error-rate", "1"], capsys)
    level = result["levels"][0]
    check_level_arithmetic(level, 1, 100)
    assert level["request_rate"] == 200
    assert 0.25 < level["duration"] < 5.0  # 100 Poisson arrivals at 200/s: about 0.5 s (slower on a loaded machine)
    result = run_json(["--url", url, "--concurrency", "2", "--duration", "0.5", "--warmup", "0",
                       "--max-error-rate", "1"], capsys)
    level = result["levels"][0]
    check_level_arithmetic(level, 1, None)
    assert 0.5 <= level["duration"] < 2.0 and level["completed"] > 0


def test_prompt_data_workload(failing_server, prompt_file, capsys):
    _, url = failing_server
    result = run_json(["--url", url, "--prompt-data", str(prompt_file), "--label-key", "answer",
                       "--concurrency", "1", "--num-requests", "10", "--texts-per-request", "2",
                       "--max-error-rate", "1"],
                      capsys)
    assert str(prompt_file) in result["workload"]
    check_level_arithmetic(result["levels"][0], 2, 10)


# ------------------------------------------------------------------------------------------ real serve-rm
@pytest.mark.slow
def test_spawned_serve_rm_with_reward_func_and_api_key(capsys):
    result = run_json(["--reward-func", str(GALLERY / "good_sync.py"), "--api-key", "s3cret", "--concurrency", "1,4",
                       "--num-requests", "60", "--texts-per-request", "2"], capsys)
    assert result["mode"] == "serve-rm"
    for level in result["levels"]:
        check_level_arithmetic(level, 2, 60)
        assert level["failed"] == 0  # the token reached the server (by environment, not argv)
    port = int(result["target"].rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError):  # the server was stopped
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


@pytest.mark.slow
def test_spawned_serve_rm_with_tiny_model(tiny_rm_seqcls_dir, capsys):
    result = run_json(["--reward-pretrain", str(tiny_rm_seqcls_dir), "--concurrency", "1,4", "--num-requests", "24",
                       "--texts-per-request", "2", "--max-tokens", "32", "--warmup", "2"], capsys)
    assert result["environment"]["scorer_torch_threads"] >= 1
    for level in result["levels"]:
        check_level_arithmetic(level, 2, 24)
        assert level["failed"] == 0


@pytest.mark.slow
def test_in_process_tiny_model(tiny_rm_seqcls_dir, capsys):
    result = run_json(["--reward-pretrain", str(tiny_rm_seqcls_dir), "--in-process", "--concurrency", "4",
                       "--num-requests", "24", "--max-tokens", "32"], capsys)
    assert result["mode"] == "in-process" and result["warnings"] == []
    check_level_arithmetic(result["levels"][0], 1, 24)
    assert result["levels"][0]["failed"] == 0


def test_in_process_reward_func_failures_are_counted(capsys):
    result = run_json(["--reward-func", str(GALLERY / "bad_wrong_length.py"), "--in-process", "--concurrency", "2",
                       "--num-requests", "10", "--warmup", "0"], capsys, expect=1)
    assert result["levels"][0]["errors"] == {"malformed": 10}


@pytest.mark.slow
def test_spawn_failure_shows_the_servers_message(tmp_path, capsys):
    code, _, err = bench_rm(["--reward-pretrain", str(tmp_path)], capsys)  # a folder, but not a model's
    assert code == 2
    assert "serve-rm exited with code 2" in err and "no config.json" in err


@pytest.mark.slow
def test_sigterm_stops_the_spawned_server(tmp_path):
    """bench-rm killed mid-run (SIGTERM, as a job scheduler does) leaves no serve-rm behind."""
    proc = subprocess.Popen(rlhfctl("bench-rm", "--reward-func", str(GALLERY / "good_sync.py"), "--duration", "60",
                                    "--concurrency", "1"),
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        children: list[int] = []
        deadline = time.monotonic() + 30
        while not children and time.monotonic() < deadline:
            time.sleep(0.2)
            children = _children(proc.pid)
        assert children, "serve-rm was not started"
        time.sleep(3)  # let the server come up and the run begin
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and b"interrupted" in err
        for pid in children:
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
