"""The reward model in a worker process (how `serve-rm --reward-pretrain` runs it): same rewards as in-process,
figures relayed to /metrics, clean errors, and a server that says so when its worker dies."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import time

import httpx
import pytest

from rlhfctl.config import ServeRMConfig
from rlhfctl.errors import UsageError
from rlhfctl.models.reward import load_reward_model
from rlhfctl.rewards.model import ModelReward
from rlhfctl.serving.app import create_app
from rlhfctl.serving.server import serve_in_thread
from rlhfctl.serving.threads import default_num_threads
from rlhfctl.serving.worker import ModelProcess
from rlhfctl.config.slices import AppGroups, ServedModelGroups

pytestmark = pytest.mark.slow  # each test starts a process that imports torch and loads a model

QUERIES = ["What is 2+2? 4", "hi", "a longer text about a cat and a dog by the river", "x"]


def test_worker_serves_the_same_rewards_and_reports_its_passes(tiny_rm_openrlhf_dir):
    cfg = ServeRMConfig(reward_pretrain=str(tiny_rm_openrlhf_dir), normalize_reward=True, num_threads=1)
    model, tokenizer = load_reward_model(tiny_rm_openrlhf_dir, normalize_reward=True)
    expected = ModelReward(model, tokenizer).score(QUERIES).rewards
    worker = ModelProcess(ServedModelGroups.of(cfg))
    info = worker.launch()
    assert info["torch_threads"] == 1 and info["batch_size"] == 16
    try:
        with serve_in_thread(create_app(worker, AppGroups.of(cfg))) as server, httpx.Client(timeout=60) as client:
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda q: client.post(server.url, json={"query": [q]}), QUERIES * 4))
            for query, answer in zip(QUERIES * 4, answers):
                assert answer.json()["rewards"][0] == pytest.approx(expected[QUERIES.index(query)], abs=1e-5)
            metrics = client.get(server.url.replace("/get_reward", "/metrics")).text
            passes = float(re.search(r"^rlhfctl_batch_size_count ([\d.]+)", metrics, re.M).group(1))
            texts = float(re.search(r"^rlhfctl_batch_size_sum ([\d.]+)", metrics, re.M).group(1))
            assert texts == len(QUERIES) * 4 and 1 <= passes <= texts
    finally:
        worker.close()
    assert not worker._process.is_alive()


def test_loading_errors_come_back_as_they_were_raised(tmp_path):
    with pytest.raises(UsageError, match="no config.json"):
        ModelProcess(ServedModelGroups.of(ServeRMConfig(reward_pretrain=str(tmp_path)))).launch()


def test_a_dead_worker_fails_requests_with_a_message_and_health_says_so(tiny_rm_seqcls_dir):
    cfg = ServeRMConfig(reward_pretrain=str(tiny_rm_seqcls_dir))
    worker = ModelProcess(ServedModelGroups.of(cfg))
    # By default the model leaves a core to the event loop (2 OpenMP threads beside it ran ~30x slower here).
    assert worker.launch()["torch_threads"] == default_num_threads() == max(1, len(os.sched_getaffinity(0)) - 1)
    try:
        with serve_in_thread(create_app(worker, AppGroups.of(cfg))) as server:
            assert httpx.post(server.url, json={"query": ["a"]}, timeout=30).status_code == 200
            os.kill(worker.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            health = httpx.get(server.url.replace("/get_reward", "/health"), timeout=30)
            while health.status_code == 200 and time.monotonic() < deadline:
                time.sleep(0.05)
                health = httpx.get(server.url.replace("/get_reward", "/health"), timeout=30)
            assert health.status_code == 503 and "reward model process exited" in health.json()["detail"]
            answer = httpx.post(server.url, json={"query": ["a"]}, timeout=30)
            assert answer.status_code == 500 and "restart serve-rm" in answer.json()["detail"]
    finally:
        worker.close()
