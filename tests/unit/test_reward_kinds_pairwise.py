"""Pairwise rewards (issue 15, part 3): a model comparing two responses to one prompt; each sample's reward is its
win rate (or Bradley-Terry strength) within its prompt's group, and a group is never split across servers or
reward-model workers. The constructed model's P(A beats B) = sigmoid(x's in A - x's in B), so the expected rewards
follow from the definitions."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from rlhfctl.config import resolve
from rlhfctl.rewards.factory import open_reward_model
from rlhfctl.rewards.groups import group_shards
from rlhfctl.rewards.remote import RemoteReward
from rlhfctl.config.slices import AppGroups
from tests.helpers import run_cli

# Two prompts, interleaved as a request may send them; responses hold 1, 3, 0 and 2, 2 x's.
PROMPTS = ["add one:", "say hi:", "add one:", "add one:", "say hi:"]
RESPONSES = [" x", " xx", " xxx", " none", " xx"]
QUERIES = [p + r for p, r in zip(PROMPTS, RESPONSES)]


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def expected_winrates(prompts: list[str], responses: list[str]) -> list[float]:
    out = []
    for p, r in zip(prompts, responses):
        others = [o for q, o, in zip(prompts, responses) if q == p]
        others.remove(r)
        out.append(sum(sigmoid(r.count("x") - o.count("x")) for o in others) / len(others) if others else 0.5)
    return out


def pairwise(folder, **options):
    cfg = resolve("serve-rm", {"reward_pretrain": str(folder), "trust_remote_code": True, "pairwise": True, **options})
    return open_reward_model(cfg.reward_pretrain, cfg, cfg)


@pytest.fixture(scope="module")
def winrate(pairwise_dir):
    return pairwise(pairwise_dir)


def test_winrate_is_the_mean_probability_of_beating_the_group(winrate):
    rewards = winrate.score(QUERIES, PROMPTS, [""] * 5).rewards
    assert rewards == pytest.approx(expected_winrates(PROMPTS, RESPONSES), abs=1e-6)
    assert rewards[1] == pytest.approx(0.5) and rewards[4] == pytest.approx(0.5)  # a tie within "say hi:"


def test_bradley_terry_recovers_the_strengths(pairwise_dir):
    bt = pairwise(pairwise_dir, pairwise_score="bt")
    rewards = bt.score(QUERIES, PROMPTS, [""] * 5).rewards
    group = [0, 2, 3]  # P(i beats j) = sigmoid(c_i - c_j): the strengths are the counts, centred
    mean = sum(RESPONSES[i].count("x") for i in group) / 3
    assert [rewards[i] for i in group] == pytest.approx([RESPONSES[i].count("x") - mean for i in group], abs=1e-4)
    assert rewards[1] == pytest.approx(0.0) and rewards[4] == pytest.approx(0.0)


def test_a_lone_sample_gets_the_neutral_reward(winrate, pairwise_dir):
    assert winrate.score(["q: xx"], ["q:"], [""]).rewards == [0.5]
    assert pairwise(pairwise_dir, pairwise_score="bt").score(["q: xx"], ["q:"], [""]).rewards == [0.0]


def test_order_of_a_pair_does_not_matter(winrate):
    forward = winrate.score(QUERIES, PROMPTS, [""] * 5).rewards
    backward = winrate.score(QUERIES[::-1], PROMPTS[::-1], [""] * 5).rewards
    assert backward[::-1] == pytest.approx(forward, abs=1e-9)


def test_group_shards_never_split_a_prompt():
    prompts = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    assert group_shards(prompts, 2) == [slice(0, 4), slice(4, 12)]
    assert group_shards(prompts, 5) == [slice(0, 4), slice(4, 8), slice(8, 12)]  # no empty shard
    assert group_shards(["", "", ""], 2) == [slice(0, 1), slice(1, 3)]  # no prompt: each sample alone


@pytest.fixture(scope="module")
def pairwise_servers(pairwise_dir):
    """Two serve-rm apps serving the pairwise model (in threads of this process)."""
    from rlhfctl.serving.app import create_app
    from rlhfctl.serving.server import open_source, serve_in_thread

    cfg = resolve("serve-rm", {"reward_pretrain": str(pairwise_dir), "trust_remote_code": True, "pairwise": True})
    sources = [open_source(cfg) for _ in range(2)]
    handles = [serve_in_thread(create_app(s, AppGroups.of(cfg))) for s in sources]
    yield [h.url for h in handles]
    for h, s in zip(handles, sources):
        h.stop()
        s.close()


def test_served_over_http_with_openrlhf_wire_format(pairwise_servers):
    answer = httpx.post(pairwise_servers[0], json={"query": QUERIES, "prompts": PROMPTS}).json()
    assert answer["rewards"] == pytest.approx(expected_winrates(PROMPTS, RESPONSES), abs=1e-6)
    health = httpx.get(pairwise_servers[0].replace("/get_reward", "/health")).json()
    assert health["cacheable"] is False  # clients must not cache a reward that depends on the group


def test_a_request_without_prompts_is_a_422_naming_them(pairwise_servers):
    answer = httpx.post(pairwise_servers[0], json={"query": QUERIES})
    assert answer.status_code == 422 and '"prompts"' in answer.json()["detail"]


def test_two_servers_receive_whole_groups(pairwise_servers):
    """RemoteReward spreads a batch over servers between groups: the rewards equal one server's."""
    prompts = [f"p{i // 4}:" for i in range(12)]  # 3 groups of 4, sorted as train-ppo sends them
    queries = [p + " " + "x" * (i % 4) for i, p in enumerate(prompts)]
    labels = [""] * 12
    one = RemoteReward(pairwise_servers[:1])
    two = RemoteReward(pairwise_servers)
    try:
        assert two.score(queries, prompts, labels).rewards == pytest.approx(one.score(queries, prompts, labels).rewards)
        assert one.cacheable is False and one.probe() is False  # only the server's /health says so
        assert one.cacheable is False
    finally:
        one.close()
        two.close()


@pytest.mark.parametrize("args, message", [
    (["--pairwise-score", "elo"], "--pairwise-score"),
    (["--pairwise-score", "bt"], "--pairwise-score has no effect without --pairwise"),
    (["--pairwise", "--pairwise-template", "{prompt} {response_a}"], "lacks {response_b}"),
    (["--pairwise-template", "{prompt} {response_a} {response_b}"], "--pairwise-template has no effect without"),
])
def test_bad_pairwise_options_exit_2(args, message, capsys):
    code, _, err = run_cli(["serve-rm", "--reward-pretrain", "rm", *args, "--print-config"], capsys)
    assert code == 2 and message in err, err


def test_check_reward_says_a_pairwise_reward_needs_groups(pairwise_dir, capsys, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"input": "add one:", "answer": " x"}\n{"input": "say hi:", "answer": " xx"}\n')
    code, out, err = run_cli(["check-reward", str(pairwise_dir), "--trust-remote-code", "--pairwise",
                               "--prompt-data", str(data), "--label-key", "answer", "--json"], capsys)
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["load"]["status"] == "pass" and checks["pairwise"]["status"] == "warn", out + err
    assert "--n-samples-per-prompt" in checks["pairwise"]["message"]


def test_bench_rm_sends_groups_to_a_pairwise_model(pairwise_dir, capsys):
    code, out, err = run_cli(["bench-rm", "--reward-pretrain", str(pairwise_dir), "--trust-remote-code",
                               "--pairwise", "--in-process", "--texts-per-request", "4", "--num-requests", "4",
                               "--warmup", "0", "--concurrency", "2", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["levels"][0]["completed"] == 4 and "one prompt's group" in result["workload"]


def test_train_ppo_reward_workers_get_whole_groups(winrate, monkeypatch):
    """The reward-model role (--reward-pretrain --pairwise, two workers) splits a step's samples between groups;
    Ray's transport is replaced by direct calls here, the split and the pairwise model are real."""
    import rlhfctl.ppo.reward_role as reward_role

    seen = []

    class Workers(list):  # what RoleReward uses of a RoleGroup: its size and `on(rank, method, ...)`
        def on(self, rank, method, queries, prompts, labels):
            assert method.__name__ == "score"
            seen.append(prompts)
            return winrate.score(queries, prompts, labels)

    monkeypatch.setattr(reward_role, "get", lambda batches: batches)
    role = reward_role.RoleReward(Workers([0, 1]), "rm", pairwise=True)
    prompts = [f"p{i // 3}:" for i in range(9)]  # 3 groups of 3: split 1 + 2, never 4.5 + 4.5
    queries = [p + " " + "x" * (i % 3) for i, p in enumerate(prompts)]
    rewards = role.score(queries, prompts, [""] * 9).rewards
    assert [len(set(s)) for s in seen] == [1, 2] and sum(map(len, seen)) == 9
    assert rewards == pytest.approx(winrate.score(queries, prompts, [""] * 9).rewards)
