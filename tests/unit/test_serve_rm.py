"""serve-rm with a reward model: the real app on uvicorn on a free loopback port, driven over HTTP."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import random
import re

import httpx
import pytest

from rlhfctl.config import ServeRMConfig
from rlhfctl.models.reward import load_reward_model
from rlhfctl.rewards.model import ModelReward
from rlhfctl.serving.app import create_app
from rlhfctl.serving.server import serve_in_thread
from rlhfctl.config.slices import AppGroups

WORDS = "the cat sat on a mat and a dog ran by the river to see what is the answer".split()


def server_config(**opts) -> ServeRMConfig:
    """Server options as serve-rm would resolve them (the source itself is passed to create_app directly)."""
    return ServeRMConfig(reward_pretrain="in-process", **opts)


def load(path, **kw) -> ModelReward:
    model, tokenizer = load_reward_model(path, normalize_reward=kw.pop("normalize_reward", False))
    return ModelReward(model, tokenizer, **kw)


@pytest.fixture(scope="module", params=["seqcls", "openrlhf"])
def served(request):
    """(reward model, server handle) for each layout; the OpenRLHF one normalises with mean 0.5, std 2.0."""
    normalise = request.param == "openrlhf"
    source = load(request.getfixturevalue(f"tiny_rm_{request.param}_dir"), normalize_reward=normalise)
    with serve_in_thread(create_app(source, AppGroups.of(server_config(max_queries_per_request=64, max_body_mb=0.05,
                                                          max_wait_ms=20)))) as handle:
        yield source, handle


def post(url: str, body, **kw) -> httpx.Response:
    if isinstance(body, (dict, list)):
        return httpx.post(url, json=body, timeout=30, **kw)
    headers = kw.pop("headers", {"Content-Type": "application/json"})
    return httpx.post(url, content=body, headers=headers, timeout=30, **kw)


def test_openrlhf_client_payload(served):
    source, handle = served
    queries = ["What is 2+2? 4", "Say hi. hi there"]
    # OpenRLHF's remote_rm_fn posts exactly this and reads rewards, scores and extra_logs.
    answer = post(handle.url, {"query": queries, "prompts": ["What is 2+2?", "Say hi."], "labels": ["4", "hi"]})
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"rewards", "scores", "extra_logs"}
    assert body["rewards"] == pytest.approx(source.score(queries).rewards, abs=1e-5)
    assert body["scores"] == body["rewards"]


def test_normalised_server_returns_the_configured_values(tiny_rm_openrlhf_dir):
    raw = load(tiny_rm_openrlhf_dir)
    normalised = load(tiny_rm_openrlhf_dir, normalize_reward=True)
    queries = ["one", "two words", "three words here"]
    with serve_in_thread(create_app(normalised, AppGroups.of(server_config(normalize_reward=True)))) as handle:
        rewards = post(handle.url, {"query": queries}).json()["rewards"]
    assert rewards == pytest.approx([(r - 0.5) / 2.0 for r in raw.score(queries).rewards], abs=1e-5)


BAD_INPUT = [
    ("invalid JSON", b'{"query": [', 422, "not valid JSON"),
    ("body is a list", b'["a", "b"]', 422, "must be a JSON object"),
    ("empty body", b"", 422, "body is empty"),
    ("missing query", b'{"queries": ["a"]}', 422, 'did you mean "query"'),
    ("query a string", b'{"query": "a"}', 422, "wrap a single text in a list"),
    ("query empty", b'{"query": []}', 422, "empty list"),
    ("non-string item", b'{"query": ["a", 3]}', 422, r'"query"\[1\] must be a string'),
    ("prompts wrong length", b'{"query": ["a", "b"], "prompts": ["p"]}', 422, '"prompts" has 1 items but "query" has 2'),
    ("labels wrong length", b'{"query": ["a"], "labels": ["x", "y"]}', 422, '"labels" has 2 items'),
    ("labels not a list", b'{"query": ["a"], "labels": 5}', 422, '"labels" must be a list'),
    ("lone surrogate", b'{"query": ["\\ud800"]}', 422, "lone surrogate"),
    ("not UTF-8", b'{"query": ["\xff\xfe"]}', 422, "not UTF-8"),
    ("too many queries", json.dumps({"query": ["a"] * 65}).encode(), 413, "at most 64 per request"),
    ("body too large", json.dumps({"query": ["x" * 60_000]}).encode(), 413, "larger than"),
]


@pytest.mark.parametrize("body,status,message", [case[1:] for case in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_gets_a_4xx_that_names_the_problem(served, body, status, message):
    _, handle = served
    answer = post(handle.url, body)
    assert answer.status_code == status
    assert re.search(message, answer.json()["detail"])
    assert post(handle.url, {"query": ["still serving"]}).status_code == 200


def test_wrong_method_and_content_type(served):
    _, handle = served
    form = httpx.post(handle.url, data={"query": "a"}, timeout=30)
    assert form.status_code == 415 and "application/json" in form.json()["detail"]
    plain = post(handle.url, b'{"query": ["a"]}', headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415
    assert httpx.get(handle.url, timeout=30).status_code == 405
    assert post(handle.url, {"query": ["ok"]}).status_code == 200


def test_concurrent_mixed_requests_batch_together_without_changing_rewards(served):
    source, handle = served
    rng = random.Random(0)
    requests = [[" ".join(rng.choices(WORDS, k=rng.randint(1, 60))) for _ in range(rng.randint(1, 4))]
                for _ in range(48)]
    alone = {t: source.forward(source.encode([t]))[0] for r in requests for t in r}
    with httpx.Client(timeout=60) as client, concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda q: client.post(handle.url, json={"query": q}), requests))
    for queries, answer in zip(requests, answers):
        assert answer.status_code == 200
        for text, reward in zip(queries, answer.json()["rewards"]):
            assert abs(reward - alone[text]) < 1e-5, text
    # Requests really shared forward passes: some batch held more texts than any single request sent.
    metrics = httpx.get(handle.url.replace("/get_reward", "/metrics"), timeout=30).text
    counts = {float(le): float(v) for le, v in re.findall(r'rlhfctl_batch_size_bucket\{le="([\d.]+)"\} ([\d.]+)',
                                                           metrics)}
    assert counts[4.0] < counts[max(counts)], "no forward pass held more than 4 texts"


def test_health_metrics_and_docs(served):
    _, handle = served
    base = handle.url.removesuffix("/get_reward")
    post(handle.url, {"query": ["a", "b"]})
    health = httpx.get(f"{base}/health", timeout=30).json()
    assert health["status"] == "ok" and health["queue_depth"] == 0
    metrics = httpx.get(f"{base}/metrics", timeout=30)
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in ("rlhfctl_requests_total", "rlhfctl_samples_total", "rlhfctl_batch_size_bucket",
                 "rlhfctl_queue_depth", "rlhfctl_request_latency_seconds_bucket"):
        assert name in metrics.text
    assert httpx.get(f"{base}/docs", timeout=30).status_code == 200
    schema = httpx.get(f"{base}/openapi.json", timeout=30).json()["paths"]["/get_reward"]["post"]
    assert "query" in json.dumps(schema["requestBody"])


def test_api_key_is_required_when_set(tiny_rm_seqcls_dir):
    source = load(tiny_rm_seqcls_dir)
    with serve_in_thread(create_app(source, AppGroups.of(server_config(api_key="s3cret")))) as handle:
        missing = post(handle.url, {"query": ["a"]})
        assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["detail"]
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = post(handle.url, {"query": ["a"]}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "invalid API key" in wrong.json()["detail"]
        right = post(handle.url, {"query": ["a"]}, headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200
        assert httpx.get(handle.url.replace("/get_reward", "/health"), timeout=30).status_code == 200


@pytest.mark.parametrize("log_texts", [False, True])
def test_texts_reach_the_log_only_when_asked(tiny_rm_seqcls_dir, caplog, log_texts):
    source = load(tiny_rm_seqcls_dir)
    app = create_app(source, AppGroups.of(server_config(log_texts=log_texts)))
    with caplog.at_level(logging.INFO), serve_in_thread(app) as h:
        assert post(h.url, {"query": ["my private text 1234"]}).status_code == 200
    assert ("my private text 1234" in caplog.text) is log_texts


def test_a_nan_from_the_model_is_a_422_naming_the_query_not_a_500(tiny_rm_seqcls_dir):
    """A reward model with one poisoned embedding row: only the query holding that token scores NaN. The answer says
    which query, and that a retry cannot help, as for a reward function's NaN (a client then stops or skips)."""
    import torch

    model, tokenizer = load_reward_model(tiny_rm_seqcls_dir)
    queries = ["a cat sat", "a cat sat ~~"]
    poisoned = set(tokenizer(queries[1])["input_ids"]) - set(tokenizer(queries[0])["input_ids"])
    with torch.no_grad():
        model.base.get_input_embeddings().weight[sorted(poisoned)] = float("nan")
    with serve_in_thread(create_app(ModelReward(model, tokenizer), AppGroups.of(server_config()))) as handle:
        assert post(handle.url, {"query": queries[:1]}).status_code == 200
        answer = post(handle.url, {"query": queries})
    body = answer.json()
    assert answer.status_code == 422, body
    assert (body["kind"], body["index"], body["retryable"]) == ("nan", 1, False)
    assert "non-finite reward" in body["detail"] and "rewards[1] is nan" in body["detail"]
