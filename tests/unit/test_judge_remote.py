"""The judge behind an OpenAI-compatible chat URL (--judge-url), against a real local server running the arithmetic
demo's judge with HF (tests/judge_chat_server.py): the same rewards as the judge run here, retries, the
requests-per-minute limit, a server without logprobs, and the judge served by serve-rm, measured by bench-rm and
opened as train-ppo's reward."""

from __future__ import annotations

import json

import httpx
import pytest

from rlhfctl.config import ServeRMConfig, TrainPPOConfig
from rlhfctl.errors import RewardError
from rlhfctl.rewards.judge_model import JudgeModel
from rlhfctl.ppo.run import open_judge_in_driver
from rlhfctl.rewards.judge_remote import ChatJudge
from rlhfctl.serving.app import create_app
from rlhfctl.serving.server import open_source, serve_in_thread
from rlhfctl.config.slices import AppGroups
from tests.helpers import run_cli
from tests.helpers.judge_chat_server import create_chat_app
from tests.unit.test_judge import ARITHMETIC_JUDGE

PROBLEMS = ["12+35=", "17+25=", "99-70=", "46+60="]
QUERIES = [p + a for p, a in zip(PROBLEMS, ["47", "32", "29", "160"])]


@pytest.fixture(scope="module")
def chat_server():
    app = create_chat_app(ARITHMETIC_JUDGE["judge_model"])
    with serve_in_thread(app) as server:
        server.app = app
        server.base = server.url.removesuffix("/get_reward")
        yield server


def _cfg(server, **kw) -> ServeRMConfig:
    tokens = {} if kw.get("judge_mode") == "generate" else {"judge_score_tokens": "0,1"}
    return ServeRMConfig(judge_url=server.base + "/v1", judge_api_model="judge",
                         judge_template=ARITHMETIC_JUDGE["judge_template"], rm_retry_backoff=0.01, **tokens, **kw)


def chat_judge(cfg: ServeRMConfig) -> ChatJudge:
    return ChatJudge.from_config(cfg, cfg, cfg)


@pytest.mark.parametrize("mode", ["logprobs", "generate"])
def test_chat_judge_gives_the_rewards_of_the_same_judge_run_here(chat_server, mode):
    extra = {"judge_mode": mode, "judge_max_new_tokens": 1} if mode == "generate" else {}
    remote_cfg = _cfg(chat_server, **extra)
    judge_options = remote_cfg.model_dump(include={"judge_template", "judge_score_tokens", "judge_mode",
                                                   "judge_max_new_tokens"})
    local_cfg = ServeRMConfig(judge_model=ARITHMETIC_JUDGE["judge_model"], **judge_options)
    local = JudgeModel.from_config(local_cfg, local_cfg).score(QUERIES, PROBLEMS, [""] * 4)
    remote = ChatJudge.from_config(remote_cfg, remote_cfg, remote_cfg)
    try:
        batch = remote.score(QUERIES, PROBLEMS, [""] * 4)
    finally:
        remote.close()
    assert batch.rewards == pytest.approx(local.rewards, abs=1e-6)
    assert batch.extra_logs == {"judge_unparsed": [0.0] * 4}


def test_retries_then_fails_naming_the_server(chat_server):
    judge = chat_judge(_cfg(chat_server, rm_max_retries=2))
    try:
        chat_server.app.state.fail_next = 2
        assert len(judge.score(QUERIES[:1], PROBLEMS[:1], [""]).rewards) == 1
        chat_server.app.state.fail_next = 3
        with pytest.raises(RewardError, match=r"v1/chat/completions: no reward after 3 attempts.*HTTP 503"):
            judge.score(QUERIES[:1], PROBLEMS[:1], [""])
    finally:
        chat_server.app.state.fail_next = 0
        judge.close()


def test_requests_per_minute_are_spaced(chat_server):
    judge = chat_judge(_cfg(chat_server, judge_rpm=300, judge_concurrency=4))  # one per 0.2 s
    try:
        chat_server.app.state.arrivals.clear()
        judge.score(QUERIES, PROBLEMS, [""] * 4)
        arrivals = sorted(chat_server.app.state.arrivals)
    finally:
        judge.close()
    assert len(arrivals) == 4  # 4 requests at once would arrive together; 300 a minute takes 0.6 s for them
    assert arrivals[-1] - arrivals[0] >= 0.55


def test_a_server_without_logprobs_says_to_use_generate_mode(chat_server):
    judge = chat_judge(_cfg(chat_server))
    chat_server.app.state.offer_logprobs = False
    try:
        with pytest.raises(RewardError, match="does not offer logprobs.*--judge-mode generate"):
            judge.score(QUERIES[:1], PROBLEMS[:1], [""])
    finally:
        chat_server.app.state.offer_logprobs = True
        judge.close()


def test_a_wrong_model_name_fails_at_once_with_the_servers_message(chat_server):
    judge = ChatJudge(chat_server.base, "nope", chat_judge(_cfg(chat_server)).settings, max_retries=3)
    try:
        with pytest.raises(RewardError, match="HTTP 404"):
            judge.score(QUERIES[:1], PROBLEMS[:1], [""])
        assert len(chat_server.app.state.arrivals) >= 1
    finally:
        judge.close()


def test_serve_rm_serves_the_chat_judge_and_bench_rm_measures_it(chat_server, capsys):
    cfg = _cfg(chat_server)
    source = open_source(cfg)
    expected = source.score(QUERIES, PROBLEMS, [""] * 4).rewards
    with serve_in_thread(create_app(source, AppGroups.of(cfg))) as server, httpx.Client(timeout=60) as client:
        answer = client.post(server.url, json={"query": QUERIES, "prompts": PROBLEMS}).json()
        assert answer["rewards"] == pytest.approx(expected, abs=1e-9)
        code, out, err = run_cli(["bench-rm", "--url", server.url, "--num-requests", "12", "--warmup", "0",
                                   "--concurrency", "4", "--json"], capsys)
    source.close()
    assert code == 0, err
    figures = json.loads(out)
    level = figures["levels"][0]
    assert level["completed"] == 12 and level["failed"] == 0 and level["sample_throughput"] > 0


def test_train_ppo_opens_the_chat_judge_as_its_reward(chat_server, tiny_policy_dir, prompt_file):
    cfg = TrainPPOConfig(pretrain=str(tiny_policy_dir), prompt_data=str(prompt_file), judge_url=chat_server.base,
                         judge_api_model="judge", judge_template=ARITHMETIC_JUDGE["judge_template"],
                         judge_score_tokens="0,1")
    reward = open_judge_in_driver(cfg)
    try:
        assert isinstance(reward, ChatJudge)
        assert len(reward.score(QUERIES, PROBLEMS, [""] * 4).rewards) == 4
    finally:
        reward.close()
