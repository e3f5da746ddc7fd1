"""RemoteReward against real servers: sharding over URLs, retries across a restart, and refusing bad answers."""

from __future__ import annotations

import concurrent.futures
import pickle
import re
import threading
import time

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from rlhfctl.config import AuthArgs, RemoteRewardArgs, ServeRMConfig
from rlhfctl.errors import RewardError, UsageError
from rlhfctl.models.reward import load_reward_model
from rlhfctl.rewards.contract import RewardFault
from rlhfctl.rewards.function import FunctionReward
from rlhfctl.rewards.model import ModelReward
from rlhfctl.rewards.remote import RemoteReward
from rlhfctl.serving.app import create_app
from rlhfctl.serving.server import serve_in_thread
from rlhfctl.config.slices import AppGroups

QUERIES = ["What is 2+2? 4", "hi", "a longer text about a cat and a dog", "x", "the answer is 42"]


@pytest.fixture(scope="module")
def source(tiny_rm_seqcls_dir) -> ModelReward:
    model, tokenizer = load_reward_model(tiny_rm_seqcls_dir)
    return ModelReward(model, tokenizer)


def start(source, port: int = 0, **opts):
    app = create_app(source, AppGroups.of(ServeRMConfig(reward_pretrain="in-process", **opts)))
    return serve_in_thread(app, port=port)


def samples_scored(url: str) -> float:
    text = httpx.get(url.replace("/get_reward", "/metrics"), timeout=10).text
    return float(re.search(r"^rlhfctl_samples_total ([\d.]+)", text, re.M).group(1))


def requests_by_status(url: str) -> dict[str, float]:
    text = httpx.get(url.replace("/get_reward", "/metrics"), timeout=10).text
    return {s: float(v) for s, v in re.findall(r'rlhfctl_requests_total\{status="(\d+)"\} ([\d.]+)', text)}


def test_batch_is_spread_over_servers_in_order(source):
    with start(source) as a, start(source) as b:
        client = RemoteReward(f"{a.url},{b.url}")
        batch = client.score(QUERIES, QUERIES, [""] * len(QUERIES))
        assert batch.rewards == pytest.approx(source.score(QUERIES).rewards, abs=1e-5)
        assert sorted([samples_scored(a.url), samples_scored(b.url)]) == [2, 3]
        # One text, two servers: one request (no empty shard); successive calls take turns.
        client.score(["one"])
        client.score(["two"])
        assert samples_scored(a.url) + samples_scored(b.url) == 7
        assert samples_scored(a.url) >= 3 and samples_scored(b.url) >= 3
        client.close()


def test_bare_host_url_gets_the_get_reward_path(source):
    with start(source) as server:
        base = server.url.removesuffix("/get_reward")
        client = RemoteReward(base)
        assert client.urls == [server.url]
        assert len(client.score(["a"])) == 1


def test_retries_until_a_restarted_server_answers(source):
    server = start(source)
    port, url = server.port, server.url
    server.stop()
    client = RemoteReward(url, max_retries=20, retry_backoff=0.05)
    result: dict = {}
    caller = threading.Thread(target=lambda: result.update(batch=client.score(QUERIES)))
    caller.start()
    time.sleep(0.5)  # the client is retrying against a closed port meanwhile
    assert caller.is_alive()
    with start(source, port=port):
        caller.join(30)
    assert result["batch"].rewards == pytest.approx(source.score(QUERIES).rewards, abs=1e-5)


def test_a_server_that_stays_down_is_an_error_naming_it(source):
    server = start(source)
    url = server.url
    server.stop()
    client = RemoteReward(url, max_retries=2, retry_backoff=0.01)
    with pytest.raises(RewardError, match=re.escape(url) + r".*after 3 attempts.*ConnectError.*running"):
        client.score(["a"])


def test_client_errors_are_not_retried(source):
    with start(source, api_key="right") as server:
        client = RemoteReward(server.url, api_key="wrong", max_retries=5, retry_backoff=10.0)
        started = time.monotonic()
        with pytest.raises(RewardError, match=r"HTTP 401: invalid API key.*--api-key"):
            client.score(["a"])
        assert time.monotonic() - started < 5  # a retry would first wait 10 s
        assert requests_by_status(server.url) == {"401": 1.0}
        assert RemoteReward(server.url, api_key="right").score(["a"]).rewards


def test_full_queue_503_is_retried(tmp_path):
    path = tmp_path / "slow.py"
    path.write_text("import time\ndef reward_func(queries, prompts, labels):\n    time.sleep(0.3)\n"
                    "    return [1.0] * len(queries)\n")
    app = create_app(FunctionReward(path), AppGroups.of(ServeRMConfig(reward_func=str(path), max_queue=1)))
    with serve_in_thread(app) as server:
        client = RemoteReward(server.url, retry_backoff=0.05, max_retries=10)
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            batches = list(pool.map(lambda q: client.score([q]), ["a", "b", "c"]))
        assert [b.rewards for b in batches] == [[1.0]] * 3
        assert requests_by_status(server.url).get("503", 0) >= 1


def test_slow_server_times_out(tmp_path):
    path = tmp_path / "slow.py"
    path.write_text("import time\ndef reward_func(queries, prompts, labels):\n    time.sleep(1)\n"
                    "    return [1.0] * len(queries)\n")
    app = create_app(FunctionReward(path), AppGroups.of(ServeRMConfig(reward_func=str(path))))
    with serve_in_thread(app) as server:
        client = RemoteReward(server.url, timeout=0.2, max_retries=1, retry_backoff=0.01)
        with pytest.raises(RewardError, match=r"after 2 attempts.*no answer within 0.2s"):
            client.score(["a"])


def bad_server():
    """A third-party server that answers 200 with broken bodies (what RemoteReward must refuse)."""
    app = FastAPI()
    answers = {
        "short": '{"rewards": [1.0]}',
        "nan": '{"rewards": [NaN, 1.0]}',
        "text": "not a reward",
        "extra": '{"rewards": [1.0, 2.0], "model": "mine"}',
    }

    @app.post("/fault/{index}")
    async def fault(index: str) -> PlainTextResponse:
        body = f'{{"detail": "no reward", "kind": "nan", "index": {index}, "retryable": false}}'
        return PlainTextResponse(body, status_code=422, media_type="application/json")

    @app.post("/{kind}")
    async def answer(kind: str) -> PlainTextResponse:
        return PlainTextResponse(answers[kind], media_type="application/json")

    return serve_in_thread(app)


@pytest.mark.parametrize("kind,message", [
    ("short", r"rewards has 1 value for 2 queries"),
    ("nan", r"rewards value is nan"),
    ("text", r"not JSON"),
])
def test_bad_answers_are_errors_not_zeros(kind, message):
    with bad_server() as server:
        url = server.url.replace("/get_reward", f"/{kind}")
        with pytest.raises(RewardError, match=re.escape(url) + ".*" + message):
            RemoteReward(url, max_retries=0).score(["a", "b"])


@pytest.mark.parametrize("index,expected", [("1", 1), ("2", None), ("-1", None), ('"1"', None), ("true", None),
                                            ("null", None)])
def test_a_faults_index_is_used_only_when_it_names_a_query_sent(index, expected):
    with bad_server() as server:
        url = server.url.replace("/get_reward", f"/fault/{index}")
        with pytest.raises(RewardFault, match="HTTP 422: no reward") as caught:
            RemoteReward(url, max_retries=0).score(["a", "b"])
    assert (caught.value.kind, caught.value.index) == ("nan", expected)


def test_a_nan_from_either_server_is_a_fault_on_its_sample_of_the_whole_batch(tmp_path):
    """Two servers score shards [0, 2) and [2, 5): a NaN's index in its request becomes its index in the batch,
    at once (never retried), so a trainer stops or skips that batch (--skip-nonfinite-batches)."""
    path = tmp_path / "nan.py"
    path.write_text("def reward_func(queries, prompts, labels):\n"
                    "    return [float('nan') if q == 'bad' else 1.0 for q in queries]\n")
    cfg = ServeRMConfig(reward_func=str(path))
    with serve_in_thread(create_app(FunctionReward(path), AppGroups.of(cfg))) as a, \
            serve_in_thread(create_app(FunctionReward(path), AppGroups.of(cfg))) as b:
        client = RemoteReward(f"{a.url},{b.url}", max_retries=5, retry_backoff=2.0)
        for at in (1, 3):
            queries = ["ok"] * 5
            queries[at] = "bad"
            started = time.monotonic()
            with pytest.raises(RewardFault, match=r"rewards value is nan, not a finite number") as caught:
                client.score(queries)
            assert time.monotonic() - started < 1.0  # a retry would have slept >= 1 s first
            assert (caught.value.kind, caught.value.index) == ("nan", at)
            assert str(caught.value).endswith(f"(sample {at})")
        assert client.score(["ok"] * 5).rewards == [1.0] * 5
        client.close()


def test_extra_keys_of_other_servers_are_tolerated():
    with bad_server() as server:
        url = server.url.replace("/get_reward", "/extra")
        assert RemoteReward(url).score(["a", "b"]).rewards == [1.0, 2.0]


def test_from_config_and_pickling(source):
    class Cfg(RemoteRewardArgs, AuthArgs):
        remote_rm_url: str

    with start(source, api_key="k") as server:
        cfg = Cfg(remote_rm_url=server.url, api_key="k", rm_timeout=5, rm_max_retries=1, rm_max_inflight=4)
        client = RemoteReward.from_config(cfg, cfg, cfg.remote_rm_url)
        assert (client.timeout, client.max_retries, client.max_inflight) == (5, 1, 4)
        assert client.cacheable is False and client.probe() is True  # serve-rm's /health says a function caches
        copy = pickle.loads(pickle.dumps(client))  # as a Ray actor receives it
        assert copy.score(["a"]).rewards == pytest.approx(client.score(["a"]).rewards)
        assert copy.cacheable is True  # what the probe learned travels with it


@pytest.mark.parametrize("urls", ["", "localhost:5000", "ftp://x/get_reward", "http://a/get_reward,file.py"])
def test_bad_urls_are_usage_errors(urls):
    with pytest.raises(UsageError, match="reward server URL"):
        RemoteReward(urls)
