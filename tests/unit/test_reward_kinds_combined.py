"""Several rewards combined (issue 15, part 4): --reward NAME=SOURCE:WEIGHT (repeated, or YAML), the weighted sum
of a reward_func.py, a reward model and a reward server; each logged by name, a failure naming its source; and
check-reward, bench-rm and serve-rm on such a reward."""

from __future__ import annotations

import json

import httpx
import pytest
import yaml

from rlhfctl.config import resolve
from rlhfctl.errors import RewardError
from rlhfctl.rewards.factory import open_combined, open_function, open_reward_model
from rlhfctl.config.reward_groups import SourceGroups
from rlhfctl.rewards.remote import RemoteReward
from rlhfctl.config.slices import AppGroups
from tests.helpers import run_cli, write

ACCURACY = '''
def reward_func(queries, prompts, labels, **kwargs):
    hits = [float(q[len(p):].strip() == l) for q, p, l in zip(queries, prompts, labels)]
    return {"rewards": hits, "extra_logs": {"has_label": hits}}
'''
LENGTH = '''
def reward_func(queries, prompts, labels, **kwargs):
    return [float(len(q) - len(p)) for q, p in zip(queries, prompts)]
'''
RAISES = '''
def reward_func(queries, prompts, labels, **kwargs):
    raise KeyError("no rule")
'''
PROMPTS = ["2+2=", "3+3=", "x+x=", "9-1="]
RESPONSES = ["4", "xx", "2x", "8x"]
QUERIES = [p + r for p, r in zip(PROMPTS, RESPONSES)]
LABELS = ["4", "6", "2x", "7"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("rewards")
    return {"acc": write(d, ACCURACY, "acc.py"), "len": write(d, LENGTH, "len.py"),
            "bad": write(d, RAISES, "bad.py")}


@pytest.fixture(scope="module")
def length_server(files):
    """serve-rm serving len.py, in a thread of this process."""
    from rlhfctl.serving.app import create_app
    from rlhfctl.serving.server import open_source, serve_in_thread

    cfg = resolve("serve-rm", {"reward_func": str(files["len"])})
    source = open_source(cfg)
    handle = serve_in_thread(create_app(source, AppGroups.of(cfg)))
    yield handle.url
    handle.stop()
    source.close()


def serve_cfg(*terms: str, **options):
    return resolve("serve-rm", {"reward": list(terms), "trust_remote_code": True, **options})


def test_the_reward_is_the_weighted_sum_of_each_source_alone(files, count_rm_dir, length_server):
    cfg = serve_cfg(f"acc={files['acc']}:1.0", f"rm={count_rm_dir}:0.5", f"len={length_server}:-0.25")
    combined = open_combined(cfg.reward, SourceGroups.of(cfg))
    alone = [open_function(str(files["acc"]), cfg, cfg), open_reward_model(str(count_rm_dir), cfg, cfg),
             RemoteReward(length_server)]
    try:
        batch = combined.score(QUERIES, PROMPTS, LABELS)
        acc, rm, length = (s.score(QUERIES, PROMPTS, LABELS).rewards for s in alone)
    finally:
        combined.close()
        for s in alone:
            s.close()
    assert batch.rewards == pytest.approx([a + 0.5 * r - 0.25 * n for a, r, n in zip(acc, rm, length)])
    assert (batch.extra_logs["acc"], batch.extra_logs["rm"], batch.extra_logs["len"]) == (acc, rm, length)
    assert batch.extra_logs["acc/has_label"] == acc  # a source's own extra_logs, under its name
    assert acc == [1.0, 0.0, 1.0, 0.0] and rm == [0.0, 2.0, 3.0, 1.0]  # the sources really differ


def test_a_failure_names_its_source(files, count_rm_dir):
    cfg = serve_cfg(f"rm={count_rm_dir}:1", f"bad={files['bad']}:1")
    combined = open_combined(cfg.reward, SourceGroups.of(cfg))
    try:
        with pytest.raises(RewardError, match=r"reward 'bad' \(.*bad\.py:reward_func\).*KeyError"):
            combined.score(QUERIES, PROMPTS, LABELS)
    finally:
        combined.close()


def test_a_source_that_cannot_open_is_named(tmp_path, capsys, files):
    code, _, err = run_cli(["serve-rm", "--reward", f"acc={files['acc']}:1", "--reward",
                             f"rm={tmp_path / 'missing'}:1"], capsys)
    assert code == 2 and "--reward rm=" in err and "missing" in err, err


def test_serve_rm_returns_each_reward_in_extra_logs(files, count_rm_dir):
    from rlhfctl.serving.app import create_app
    from rlhfctl.serving.server import open_source, serve_in_thread

    cfg = serve_cfg(f"acc={files['acc']}:2", f"rm={count_rm_dir}:1")
    source = open_source(cfg)
    try:
        with serve_in_thread(create_app(source, AppGroups.of(cfg))) as server:
            answer = httpx.post(server.url, json={"query": QUERIES, "prompts": PROMPTS, "labels": LABELS}).json()
    finally:
        source.close()
    assert answer["rewards"] == [2.0, 2.0, 5.0, 1.0]
    assert answer["extra_logs"]["acc"] == [1.0, 0.0, 1.0, 0.0] and answer["extra_logs"]["rm"] == [0.0, 2.0, 3.0, 1.0]


def test_yaml_mapping_and_short_forms(tmp_path, capsys):
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"reward": {"accuracy": {"source": "acc.py", "weight": 1.0},
                                              "rm": "http://127.0.0.1:5000/get_reward:0.5",
                                              "replicas": "http://a:5000,http://b:5000"}}))
    code, out, err = run_cli(["train-ppo", "--pretrain", "p", "--prompt-data", "d.jsonl", "--config", str(run),
                               "--print-config"], capsys)
    assert code == 0, err
    assert yaml.safe_load(out)["reward"] == {
        "accuracy": {"source": "acc.py", "weight": 1.0},
        "rm": {"source": "http://127.0.0.1:5000/get_reward", "weight": 0.5},
        "replicas": {"source": "http://a:5000,http://b:5000", "weight": 1.0}}  # a port is not a weight


@pytest.mark.parametrize("reward, message", [
    ({"acc": {"source": "acc.py", "wieght": 2}}, "wieght"),
    ({"bad name!": "acc.py"}, "is not a reward name"),
    ({"acc": {"source": "acc.py", "weight": ".nan"}}, "weight"),
    ({"acc": {"source": " "}}, "is empty"),
    ([1, 2], "NAME=SOURCE:WEIGHT text"),
])
def test_bad_reward_in_a_config_file_exits_2(reward, message, tmp_path, capsys):
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"reward": reward}).replace("'.nan'", ".nan"))
    code, _, err = run_cli(["serve-rm", "--config", str(run), "--print-config"], capsys)
    assert code == 2 and message in err and "Traceback" not in err, err


@pytest.mark.parametrize("args, message", [
    (["--reward", "a=x.py:1", "--reward", "a=y.py:1"], "the name 'a' is given twice"),
    (["--reward", "a=x.py:1", "--reward", "y.py"], "name each of several rewards"),
    (["--reward", "a=x.py:1", "--remote-rm-url", "http://h:1/get_reward"], "--reward names all of the run's reward"),
    (["--reward", "a=x.py:1", "--reward-pretrain", "rm"], "put --remote-rm-url, --reward-pretrain or the judge in"),
])
def test_bad_reward_flags_exit_2(args, message, capsys):
    code, _, err = run_cli(["train-ppo", "--pretrain", "p", "--prompt-data", "d.jsonl", *args, "--print-config"],
                            capsys)
    assert code == 2 and message in err, err


def test_serve_rm_takes_one_kind_of_source(capsys):
    code, _, err = run_cli(["serve-rm", "--reward-pretrain", "rm", "--reward", "a=x.py:1", "--print-config"], capsys)
    assert code == 2 and "give exactly one of --reward-pretrain" in err, err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "d.jsonl"
    path.write_text("".join(json.dumps({"input": p, "answer": l}) + "\n" for p, l in zip(PROMPTS, LABELS)))
    return path


def test_check_reward_checks_a_combined_reward(files, count_rm_dir, data, capsys):
    code, out, err = run_cli(["check-reward", f"acc={files['acc']}:1", f"rm={count_rm_dir}:0.5",
                               "--trust-remote-code", "--prompt-data", str(data), "--label-key", "answer",
                               "--json"], capsys)
    report = json.loads(out)
    checks = {c["name"]: c["status"] for c in report["checks"]}
    assert code == 0 and checks["load"] == "pass" and checks["separation"] == "pass", out + err
    assert "acc" in report["reward"] and "rm" in report["reward"]


def test_bench_rm_measures_a_combined_reward(files, count_rm_dir, capsys):
    code, out, err = run_cli(["bench-rm", "--reward", f"acc={files['acc']}:1", "--reward", f"rm={count_rm_dir}:1",
                               "--trust-remote-code", "--in-process", "--num-requests", "6", "--warmup", "0",
                               "--concurrency", "2", "--json"], capsys)
    assert code == 0, err
    level = json.loads(out)["levels"][0]
    assert level["completed"] == 6 and not level["errors"], level
