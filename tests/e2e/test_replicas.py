"""Replicas that fail over: three serve-rm processes on loopback, one killed (kill -9) while a client scores many
batches, then restarted on its port; and, in-thread, what each failure does to the choice of replica."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from rlhfctl.config import ServeRMConfig
from rlhfctl.errors import RewardError
from rlhfctl.ppo.scoring import extra_log_means
from rlhfctl.rewards.combined import CombinedReward
from rlhfctl.rewards.function import FunctionReward
from rlhfctl.rewards.remote import RemoteReward
from rlhfctl.config.slices import AppGroups
from rlhfctl.serving.app import create_app
from rlhfctl.serving.server import serve_in_thread
from tests.helpers import ENV, run_cli, start_server

# Each replica appends the queries it scores to COUNTS/REPLICA, and says who it is in extra_logs.
REWARD_FUNC = """\
import os, time

def reward_func(queries, prompts, labels):
    replica = os.environ["REPLICA"]
    with open(os.path.join(os.environ["COUNTS"], replica), "a") as f:
        f.write("".join(q + "\\n" for q in queries))
    time.sleep(0.02)
    return {"rewards": [float(len(q)) for q in queries], "extra_logs": {"replica": [float(replica)] * len(queries)}}
"""
BATCH = 6


def _start(func: Path, counts: Path, replica: int, port: int = 0):
    env = {**ENV, "REPLICA": str(replica), "COUNTS": str(counts)}
    return start_server("--reward-func", str(func), "--port", str(port), env=env, new_session=True)


def _kill(proc) -> None:
    """kill -9 the replica and its reward workers."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def _scored(counts: Path, replica: int) -> Counter[str]:
    path = counts / str(replica)
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


def _run(client: RemoteReward, first: int, batches: int, on_done=None) -> list[dict]:
    """Score `batches` batches of distinct texts from 3 threads; per batch: its texts, the answer and whether
    replica 2 was out when it started."""
    done = []
    lock = threading.Lock()

    def one(b: int) -> dict:
        queries = [f"batch {b} sample {'x' * j}" for j in range(BATCH)]
        two_out = not client.replicas.states()[2].up
        batch = client.score(queries, queries, [""] * BATCH)
        with lock:
            done.append(b)
            if on_done is not None:
                on_done(len(done))
        return {"queries": queries, "batch": batch, "two_out": two_out}

    with ThreadPoolExecutor(3) as pool:
        return list(pool.map(one, range(first, first + batches)))


def _check_scored_once(results: list[dict]) -> Counter[int]:
    """Every reward right (never 0), answered by the replica the client counted; samples per replica."""
    per_replica: Counter[int] = Counter()
    for r in results:
        batch = r["batch"]
        assert batch.rewards == [float(len(q)) for q in r["queries"]]
        for j in range(BATCH):
            replica = int(batch.extra_logs["replica"][j])
            assert batch.extra_logs[f"replica{replica}_share"][j] == 1.0
            assert sum(batch.extra_logs[f"replica{i}_share"][j] for i in range(3)) == 1.0
            per_replica[replica] += 1
    return per_replica


def test_a_killed_replica_fails_over_and_comes_back(tmp_path):
    func, counts = tmp_path / "reward_func.py", tmp_path / "counts"
    func.write_text(REWARD_FUNC)
    counts.mkdir()
    with ThreadPoolExecutor(3) as pool:
        servers = list(pool.map(lambda i: _start(func, counts, i), range(3)))
    procs = [proc for proc, _, _ in servers]
    urls = [url for _, url, _ in servers]
    client = RemoteReward(urls, timeout=10, max_retries=3, retry_backoff=0.1, health_interval=0.3)
    try:
        killed = threading.Event()

        def kill_midway(n_done: int) -> None:
            if n_done == 12 and not killed.is_set():
                killed.set()
                _kill(procs[2])

        before = _run(client, 0, 60, kill_midway)
        assert killed.is_set()
        per_replica = _check_scored_once(before)
        assert sum(per_replica.values()) == 60 * BATCH
        # Exactly once on a live replica: what replicas 0 and 1 scored is what the client got from them; replica 2
        # answered only what it scored before it died (it may have scored a chunk it never answered).
        for i in (0, 1):
            answered = Counter(q for r in before for j, q in enumerate(r["queries"])
                               if r["batch"].extra_logs["replica"][j] == i)
            assert _scored(counts, i) == answered
        assert not set(q for r in before for j, q in enumerate(r["queries"])
                       if r["batch"].extra_logs["replica"][j] == 2) - set(_scored(counts, 2))
        # Its traffic moved to the others: no batch begun after it was taken out reached it.
        after_kill = [r for r in before if r["two_out"]]
        assert len(after_kill) >= 30
        assert all(sum(r["batch"].extra_logs["replica2_share"]) == 0 for r in after_kill)
        assert all(r["batch"].extra_logs["replicas_up"] == [2.0] * BATCH for r in after_kill)
        assert 0 < per_replica[2] < per_replica[0] and per_replica[2] < per_replica[1]

        # Back on its port: the /health probe brings it in again, and it takes its share.
        port = int(re.search(r":(\d+)/", urls[2]).group(1))
        procs[2] = _start(func, counts, 2, port)[0]
        deadline = time.monotonic() + 5
        while not client.replicas.states()[2].up and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.replicas.states()[2].up
        again = _check_scored_once(_run(client, 1000, 30))
        assert again[2] >= 0.2 * 30 * BATCH
        states = client.replicas.states()
        assert [s.up for s in states] == [True] * 3 and states[2].failures >= 1
        assert sum(s.samples for s in states) == 90 * BATCH
    finally:
        client.close()
        for proc in procs:
            _kill(proc)


def _answering(replica: int) -> FastAPI:
    """A stand-in replica whose reward is its own number, so a test sees who scored each sample."""
    app = FastAPI()

    @app.post("/get_reward")
    async def get_reward(body: dict) -> dict:
        return {"rewards": [float(replica)] * len(body["query"])}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    return app


def _failing(status: int, headers: dict[str, str] | None = None) -> tuple[FastAPI, list[int]]:
    app, calls = FastAPI(), []

    @app.post("/get_reward")
    async def get_reward() -> JSONResponse:
        calls.append(1)
        return JSONResponse({"detail": "broken"}, status_code=status, headers=headers)

    return app, calls


def test_pairwise_groups_reach_one_replica_whole():
    with serve_in_thread(_answering(0)) as a, serve_in_thread(_answering(1)) as b, \
            serve_in_thread(_answering(2)) as c:
        client = RemoteReward([a.url, b.url, c.url])
        prompts = [p for p in "abcdefg" for _ in range(4)]
        for _ in range(3):
            rewards = client.score(prompts, prompts, [""] * len(prompts)).rewards
            by_group = {p: {r for q, r in zip(prompts, rewards) if q == p} for p in prompts}
            assert all(len(scorers) == 1 for scorers in by_group.values())
            assert len(set(rewards)) == 3  # spread over all three
        # What train-ppo's metrics.jsonl gets from a batch: each replica's share, and how many are up.
        logged = extra_log_means(client.score(prompts, prompts, [""] * len(prompts)), "reward/")
        assert sum(logged[f"reward/replica{i}_share"] for i in range(3)) == pytest.approx(1.0)
        assert min(logged[f"reward/replica{i}_share"] for i in range(3)) > 0
        assert logged["reward/replicas_up"] == 3.0
        client.close()


def test_a_5xx_replica_is_taken_out_and_its_chunks_go_elsewhere():
    broken, calls = _failing(500)
    with serve_in_thread(broken) as bad, serve_in_thread(_answering(7)) as good:
        client = RemoteReward([bad.url, good.url], retry_backoff=5.0, health_interval=60)
        started = time.monotonic()
        for _ in range(5):
            assert client.score(["a", "b", "c", "d"]).rewards == [7.0] * 4
        assert time.monotonic() - started < 3  # failover is at once, never a backoff
        assert len(calls) == 1  # out after its first 5xx; its /health (404) keeps it out
        assert [s.up for s in client.replicas.states()] == [False, True]
        client.close()


def test_a_busy_replica_stays_in_and_a_4xx_is_not_failed_over():
    busy, busy_calls = _failing(503, {"Retry-After": "0"})
    refusing, refused = _failing(422)
    with serve_in_thread(busy) as full, serve_in_thread(_answering(1)) as good, \
            serve_in_thread(refusing) as bad_request:
        client = RemoteReward([full.url, good.url], health_interval=60)
        assert client.score(["a", "b"]).rewards == [1.0, 1.0]
        assert client.replicas.states()[0].up  # a full queue is busy, not down
        before = len(busy_calls)
        client.score(["a", "b"])
        # still in the rotation: the next batch tries it again (a retry may land on it more than once: both replicas
        # idle is a tie that the first wins)
        assert len(busy_calls) > before and client.replicas.states()[0].up
        client.close()
        client = RemoteReward([bad_request.url, good.url], health_interval=60)
        with pytest.raises(RewardError, match="HTTP 422"):
            for _ in range(2):  # the 422 replica's turn comes within two calls
                client.score(["a"])
        assert len(refused) == 1
        client.close()


def test_a_batch_no_replica_can_score_is_an_error_naming_each():
    urls = [f"http://127.0.0.1:{port}/get_reward" for port in (1, 2, 3)]  # nothing listens on ports 1-3
    client = RemoteReward(urls, max_retries=1, retry_backoff=0.01)
    with pytest.raises(RewardError, match=r"no replica could score the batch \(2 attempts over 3 replicas\)") as err:
        client.score(["a", "b", "c"])
    assert all(url in str(err.value) for url in urls)
    client.close()


def test_serve_rm_that_fans_out_exports_each_replica(tmp_path):
    func = tmp_path / "f.py"
    func.write_text("def reward_func(queries, prompts, labels):\n    return [1.0] * len(queries)\n")
    cfg = ServeRMConfig(reward_func=str(func))
    with serve_in_thread(create_app(FunctionReward(func), AppGroups.of(cfg))) as a, \
            serve_in_thread(create_app(FunctionReward(func), AppGroups.of(cfg))) as b:
        combined = CombinedReward([("rm", 1.0, RemoteReward([a.url, b.url]))])
        with serve_in_thread(create_app(combined, AppGroups.of(ServeRMConfig(reward=f"rm={a.url},{b.url}")))) as front:
            answer = httpx.post(front.url, json={"query": ["x"] * 8}, timeout=10).json()
            assert answer["rewards"] == [1.0] * 8
            assert answer["extra_logs"]["rm/replicas_up"] == [2.0] * 8
            text = httpx.get(front.url.replace("/get_reward", "/metrics"), timeout=10).text
        combined.close()
    samples = dict(re.findall(r'rlhfctl_replica_samples_total\{replica="([^"]+)",reward="rm"\} ([\d.]+)', text))
    assert samples == {a.url: "4.0", b.url: "4.0"}
    assert f'rlhfctl_replica_up{{replica="{a.url}",reward="rm"}} 1.0' in text


@pytest.mark.parametrize("args", [
    ["--remote-rm-url", "http://a:1,http://b:2,http://c:3"],
    ["--remote-rm-url", "http://a:1", "--remote_rm_url", "http://b:2,http://c:3"],  # OpenRLHF's spelling, repeated
])
def test_replicas_are_given_comma_separated_or_by_repeating_the_flag(args, capsys):
    code, out, err = run_cli(["train-ppo", "--pretrain", "p", "--prompt-data", "d", *args, "--print-config"], capsys)
    assert code == 0, err
    assert "remote_rm_url: http://a:1,http://b:2,http://c:3" in out.splitlines()
