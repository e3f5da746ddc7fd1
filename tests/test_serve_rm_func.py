"""serve-rm serving a reward_func.py: prompts and labels pass through, a failing function fails only its request,
and a full queue answers 503 with Retry-After."""

from __future__ import annotations

import textwrap
import threading
import time

import httpx
import pytest

from rlhfctl.config import ServeRMConfig
from rlhfctl.rewards.function import FunctionReward
from rlhfctl.serving.app import create_app
from rlhfctl.serving.server import serve_in_thread

REWARD_FUNC = '''
import asyncio
import time

def reward_func(queries, prompts, labels, **kwargs):
    if any("boom" in q for q in queries):
        raise ValueError("cannot score a boom")
    if any("nan" in q for q in queries):
        return [float("nan")] * len(queries)
    if any("sleep" in q for q in queries):
        time.sleep(0.6)
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


def serve(path, function="reward_func", **opts):
    cfg = ServeRMConfig(reward_func=str(path), function=function, **opts)
    return serve_in_thread(create_app(FunctionReward(path, function=function), cfg))


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
        assert raised.status_code == 500
        detail = raised.json()["detail"]
        assert "reward function failed" in detail and "server-side" in detail
        assert "ValueError: cannot score a boom" in detail and "reward_func.py" in detail
        broken = httpx.post(handle.url, json={"query": ["nan"]}, timeout=30)
        assert broken.status_code == 500 and "nan, not a finite number" in broken.json()["detail"]
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
