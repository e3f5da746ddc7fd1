"""serve-rm serving a reward_func.py in worker processes: prompts and labels pass through, a failing function fails
only its request with a status clients do not retry, a hung one is killed at --reward-timeout while the server keeps
serving (and /health says degraded), and a full queue answers 503 with Retry-After."""

from __future__ import annotations

import textwrap
import threading
import time

import httpx
import pytest

from rlhfctl.config import ServeRMConfig
from rlhfctl.config.slices import AppGroups
from rlhfctl.errors import RewardError
from rlhfctl.rewards.remote import RemoteReward
from rlhfctl.serving.app import create_app
from rlhfctl.serving.server import open_source, serve_in_thread
from tests.helpers.meeting import MEET, overlapped

REWARD_FUNC = MEET + '''
import asyncio
import os
import time

def reward_func(queries, prompts, labels, **kwargs):
    if any("hang" in q for q in queries):
        time.sleep(1000)
    if any("spin" in q for q in queries):
        while True:  # CPU-bound and never releases the GIL for long: no thread could stop this
            pass
    if any("exit" in q for q in queries):
        os._exit(7)
    if any("boom" in q for q in queries):
        raise ValueError("cannot score a boom")
    if any("nan" in q for q in queries):
        return [float("nan") if "nan" in q else 0.0 for q in queries]
    if any("sleep" in q for q in queries):
        time.sleep(0.6)
    for q in queries:
        if q.startswith("meet:"):  # tests/helpers/meeting.py
            meet(q[len("meet:"):])
    return {
        "rewards": [1.0 if l and q.endswith(l) else 0.0 for q, l in zip(queries, labels)],
        "extra_logs": {"prompt_len": [float(len(p)) for p in prompts]},
    }

async def async_reward(queries, prompts, labels):
    await asyncio.sleep(0.01)
    return [float(len(q)) for q in queries]
'''


@pytest.fixture(scope="module")
def func_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rf") / "reward_func.py"
    path.write_text(textwrap.dedent(REWARD_FUNC))
    return path


class Served:
    """serve-rm on a reward_func.py (its FunctionPool closed on exit, as run_server closes it)."""

    def __init__(self, path, function="reward_func", **opts):
        cfg = ServeRMConfig(reward_func=str(path), function=function, **opts)
        self.source = open_source(cfg)
        self.handle = serve_in_thread(create_app(self.source, AppGroups.of(cfg)))

    def __enter__(self):
        return self.handle

    def __exit__(self, *exc):
        self.handle.stop()
        self.source.close()


serve = Served


def health(handle):
    return httpx.get(handle.url.replace("/get_reward", "/health"), timeout=30).json()


def test_prompts_and_labels_reach_the_function(func_file):
    with serve(func_file) as handle:
        answer = httpx.post(handle.url, json={"query": ["What is 2+2? 4", "What is 2+2? 5"],
                                              "prompts": ["What is 2+2?", "Q"], "labels": ["4", "4"]}, timeout=30)
    assert answer.status_code == 200
    assert answer.json() == {"rewards": [1.0, 0.0], "scores": [1.0, 0.0], "extra_logs": {"prompt_len": [12.0, 1.0]}}


def test_async_function(func_file):
    with serve(func_file, function="async_reward") as handle:
        answer = httpx.post(handle.url, json={"query": ["ab", "abcd"]}, timeout=30)
    assert answer.json()["rewards"] == [2.0, 4.0]


def test_a_failing_function_fails_its_request_only(func_file):
    with serve(func_file) as handle:
        raised = httpx.post(handle.url, json={"query": ["boom"]}, timeout=30)
        assert raised.status_code == 422 and raised.json()["retryable"] is False
        detail = raised.json()["detail"]
        assert "reward function failed" in detail and "not retried" in detail
        assert "ValueError: cannot score a boom" in detail and "reward_func.py" in detail
        broken = httpx.post(handle.url, json={"query": ["fine", "nan"]}, timeout=30)
        assert broken.status_code == 422 and "nan, not a finite number" in broken.json()["detail"]
        # the query's index in the request, so a trainer can skip the batch (--skip-nonfinite-batches)
        assert (broken.json()["kind"], broken.json()["index"], broken.json()["retryable"]) == ("nan", 1, False)
        ok = httpx.post(handle.url, json={"query": ["fine"], "labels": ["fine"]}, timeout=30)
        assert ok.status_code == 200 and ok.json()["rewards"] == [1.0]


def test_full_queue_answers_503_with_retry_after(func_file):
    with serve(func_file, max_queue=2) as handle:
        slow = {}
        worker = threading.Thread(target=lambda: slow.update(r=httpx.post(
            handle.url, json={"query": ["sleep", "sleep"]}, timeout=30)))
        worker.start()
        deadline = time.monotonic() + 10
        while httpx.get(handle.url.replace("/get_reward", "/health"), timeout=30).json()["queue_depth"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        full = httpx.post(handle.url, json={"query": ["x"]}, timeout=30)
        assert full.status_code == 503
        assert full.headers["retry-after"] == "1" and "queue is full" in full.json()["detail"]
        too_big = httpx.post(handle.url, json={"query": ["x"] * 3}, timeout=30)
        assert too_big.status_code == 413 and "--max-queue 2" in too_big.json()["detail"]
        worker.join()
        assert slow["r"].status_code == 200
        assert httpx.post(handle.url, json={"query": ["x"]}, timeout=30).status_code == 200


@pytest.mark.parametrize("query", ["hang", "spin"])
def test_a_hung_call_is_killed_at_the_timeout_and_the_server_keeps_serving(func_file, query):
    with serve(func_file, reward_timeout=1.0) as handle:
        started = time.perf_counter()
        stuck = httpx.post(handle.url, json={"query": [query]}, timeout=30)
        assert time.perf_counter() - started < 10
        assert stuck.status_code == 504 and stuck.json()["retryable"] is False
        assert "took longer than the timeout of 1s on a batch of 1" in stuck.json()["detail"]
        assert "reward_func.py:reward_func" in stuck.json()["detail"]
        assert health(handle)["status"] == "degraded" and "timed out" in health(handle)["reason"]
        ok = httpx.post(handle.url, json={"query": ["fine"], "labels": ["fine"]}, timeout=30)
        assert ok.status_code == 200 and ok.json()["rewards"] == [1.0]


def test_a_function_that_kills_its_process_fails_its_request_and_the_next_call_works(func_file):
    with serve(func_file) as handle:
        dead = httpx.post(handle.url, json={"query": ["exit"]}, timeout=30)
        assert dead.status_code == 422 and "worker process exited (code 7)" in dead.json()["detail"]
        assert health(handle)["status"] == "degraded"
        assert httpx.post(handle.url, json={"query": ["x"]}, timeout=30).status_code == 200


def test_health_is_ok_with_the_workers_it_was_given(func_file):
    with serve(func_file, reward_workers=2) as handle:
        assert httpx.post(handle.url, json={"query": ["x"]}, timeout=30).status_code == 200
        assert health(handle)["status"] == "ok" and health(handle)["workers"] == 2


@pytest.mark.parametrize("workers,concurrent", [(1, False), (2, True)])
def test_reward_workers_is_how_many_calls_run_at_once(func_file, workers, concurrent, tmp_path):
    spans = tmp_path / "spans"
    with serve(func_file, reward_workers=workers) as handle:
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(httpx.post(
            handle.url, json={"query": [f"meet:{spans}"]}, timeout=30))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert [a.status_code for a in answers] == [200, 200]
    assert overlapped(spans) == concurrent, spans.read_text()  # two workers run both at once, one in turn


def test_remote_reward_shows_the_functions_message_at_once_without_retrying(func_file):
    with serve(func_file) as handle:
        client = RemoteReward(handle.url, max_retries=5, retry_backoff=2.0)
        started = time.perf_counter()
        with pytest.raises(RewardError, match="ValueError: cannot score a boom"):
            client.score(["boom"])
        assert time.perf_counter() - started < 1.5  # a retry would have slept >= 1 s first
        client.close()
