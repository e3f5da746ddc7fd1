"""check-reward: each broken reward function of the gallery diagnosed with its own message, the good ones passing,
reward servers checked through a URL (a small real FastAPI app and the real serve-rm), and every bad input a clean
usage error. Library API (`run_checks`) and command line (`rlhfctl.cli.app.main`) both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from rlhfctl.checks import Report, run_checks
from rlhfctl.config import resolve
from rlhfctl.config.slices import AppGroups
from tests.helpers import GALLERY, ROOT, run_cli, write_jsonl

EXAMPLE_FUNC = ROOT / "examples" / "reward_func.py"
EXAMPLE_DATA = ROOT / "examples" / "data.jsonl"


def check(reward: str | Path, data: str | Path, **flags) -> Report:
    """run_checks on the resolved options, as the CLI would build them."""
    options = {"reward": str(reward), "prompt_data": str(data), "label_key": "answer",
               "micro_rollout_batch_size": 2, **flags}
    return run_checks(resolve("check-reward", options))


def status(report: Report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def message(report: Report, name: str) -> str:
    found = report.get(name)
    assert found is not None, f"no {name!r} check in {status(report)}"
    return found.message


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    return run_cli(["check-reward", *args], capsys)


# ------------------------------------------------------------------------------------------------ the gallery
GALLERY_CASES = [
    # file, failing/warning check, status, words of its message
    ("bad_syntax", "load", "fail", "bad_syntax.py:3: syntax error: expected ':'"),
    ("bad_import", "load", "fail", "bad_import.py:3: importing it raised ModuleNotFoundError"),
    ("bad_no_reward_func", "load", "fail", "defines no function 'reward_func' (functions it defines: compute_reward)"),
    ("bad_signature", "signature", "fail", "has signature reward_func(queries), which cannot be called as"),
    ("bad_wrong_length", "contract", "fail", "rewards has 1 value for 2 queries"),
    ("bad_nan", "contract", "fail", "sample 2 (row 2, label '42'): rewards value is nan, not a finite number"),
    ("bad_raises_some_rows", "exceptions", "fail", "sample 2 (row 2, label '42'): raised KeyError: '42' (line 8)"),
    ("bad_returns_strings", "contract", "fail", "rewards value is a string ('1.0'), not a number"),
    ("bad_dict_keys", "contract", "fail", "without the key 'rewards' (its keys: 'reward', 'score') (did you mean"),
    ("bad_ignores_labels", "separation", "warn", "no separation"),
    ("bad_constant", "constant", "warn", "every reward is 0.5"),
    ("bad_all_zeros", "zeros", "warn", "every reward is 0"),
    ("bad_nondeterministic", "determinism", "warn", "the same batch scored twice gave different rewards"),
]


@pytest.mark.parametrize("name,check_name,expected,words", GALLERY_CASES, ids=[c[0] for c in GALLERY_CASES])
def test_gallery_each_broken_function_gets_its_own_diagnosis(name, check_name, expected, words, prompt_file):
    report = check(GALLERY / f"{name}.py", prompt_file)
    assert status(report)[check_name] == expected, report.to_json()["checks"]
    assert words in message(report, check_name)
    assert report.exit_code == (1 if expected == "fail" else 0)
    others = [c.name for c in report.checks if c.status in ("fail", "warn") and c.name != check_name]
    # the diagnosis is specific: a broken contract does not also show up as some behaviour warning
    assert not others or expected == "warn", others


def test_missing_file_fails_the_load_check(tmp_path, prompt_file):
    report = check(tmp_path / "reward_func.py", prompt_file)
    assert status(report) == {"load": "fail"}
    assert message(report, "load").endswith("reward_func.py: no such file")


def test_too_slow_for_the_timeout_stops_at_the_first_call(prompt_file):
    report = check(GALLERY / "bad_slow.py", prompt_file, reward_timeout=0.3)
    assert status(report)["timeout"] == "fail"
    assert "took longer than the timeout of 0.3s on a batch of 2" in message(report, "timeout")
    assert "6 samples not scored" in message(report, "timeout")
    assert "determinism" not in status(report)  # nothing was scored, so no behaviour to judge
    assert report.exit_code == 1


def test_ignoring_labels_reports_both_means_and_their_difference(prompt_file):
    report = check(GALLERY / "bad_ignores_labels.py", prompt_file)
    sep = report.stats["separation"]
    assert sep["difference"] == pytest.approx(0.0, abs=1e-12)
    assert "does your reward look at the labels?" in message(report, "separation")
    assert status(report)["constant"] == "pass"  # not constant: only blind to the labels


def test_exception_detail_shows_the_input_and_the_users_traceback(prompt_file):
    report = check(GALLERY / "bad_raises_some_rows.py", prompt_file)
    detail = report.get("exceptions").details[0]
    assert detail["sample"] == 2 and detail["label"] == "42" and detail["query"] == "What is 7 * 6?42"
    assert 'bad_raises_some_rows.py", line 8, in spelled' in detail["traceback"]
    # two of the three batches hold a two-digit label, in the main run and in the control run
    assert "4 of 6 calls failed" in message(report, "exceptions")


@pytest.mark.parametrize("name", ["good_sync", "good_async", "good_tensor", "good_dict"])
def test_gallery_good_functions_pass_every_check(name, prompt_file):
    report = check(GALLERY / f"{name}.py", prompt_file)
    assert report.exit_code == 0
    assert all(s == "pass" for s in status(report).values()), report.to_json()["checks"]
    assert {"load", "signature", "data", "contract", "exceptions", "timeout", "determinism", "constant", "zeros",
            "separation", "speed"} == set(status(report))


def test_strict_turns_behaviour_warnings_into_failures(prompt_file):
    assert check(GALLERY / "bad_constant.py", prompt_file).exit_code == 0
    strict = check(GALLERY / "bad_constant.py", prompt_file, strict=True)
    assert strict.exit_code == 1 and status(strict)["constant"] == "fail"


# ------------------------------------------------------------------------------------------------ responses
def test_shipped_example_passes_on_oracle_and_real_responses():
    oracle = check(EXAMPLE_FUNC, EXAMPLE_DATA, micro_rollout_batch_size=8)
    assert oracle.exit_code == 0 and oracle.stats["mean"] == 1.0 and oracle.stats["scored"] == 48
    real = check(EXAMPLE_FUNC, EXAMPLE_DATA, micro_rollout_batch_size=8, responses="column:response")
    assert real.exit_code == 0
    assert real.stats["mean"] == pytest.approx(40 / 48)  # 8 rows of the example hold a wrong answer
    assert real.stats["extra_logs_mean"]["format_has_number"] == 1.0
    assert all(row["reward"] == 0.0 for row in real.worst)  # the wrong answers are shown first
    assert real.stats["separation"]["mismatched_mean"] == 0.0


def test_shuffled_responses_are_the_wrong_answers(prompt_file):
    report = check(GALLERY / "good_sync.py", prompt_file, responses="shuffled")
    assert report.exit_code == 0
    assert report.stats["mean"] < 0.5  # another row's label is mostly wrong
    assert status(report)["separation"] == "pass"  # compared with the oracle answers


def test_queries_use_the_chat_template_as_train_ppo_does(tmp_path, prompt_file, tiny_policy_dir):
    reward = tmp_path / "template_reward.py"
    reward.write_text("def reward_func(queries, prompts, labels):\n"
                      "    return [float(q.startswith(p) and '<|assistant|>' in p and q.endswith(l))\n"
                      "            for q, p, l in zip(queries, prompts, labels)]\n")
    report = check(reward, prompt_file, apply_chat_template=True, pretrain=str(tiny_policy_dir))
    assert report.stats["mean"] == 1.0 and report.exit_code == 0


@pytest.mark.slow
def test_responses_sampled_from_a_local_policy(prompt_file, tiny_policy_dir):
    report = check(GALLERY / "good_dict.py", prompt_file, responses=f"model:{tiny_policy_dir}",
                   n_samples_per_prompt=2, generate_max_len=4, max_samples=3)
    assert report.stats["samples"] == 6 and report.stats["scored"] == 6
    assert status(report)["contract"] == "pass" and status(report)["exceptions"] == "pass"


def test_column_responses_without_labels_skip_the_label_checks(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"input": f"q{i}", "response": str(i)} for i in range(4)])
    report = run_checks(resolve("check-reward", {"reward": str(GALLERY / "good_dict.py"), "prompt_data": str(data),
                                                 "responses": "column:response"}))
    assert status(report)["data"] == "warn" and status(report)["separation"] == "skip"


# ------------------------------------------------------------------------------------------------ data checks
def test_rows_without_a_label_fail_the_data_check(tmp_path):
    rows = [{"input": "a", "answer": "1"}, {"input": "b", "answer": None}, {"input": "c", "answer": "3"}]
    report = check(GALLERY / "good_sync.py", write_jsonl(tmp_path / "d.jsonl", rows))
    assert status(report)["data"] == "fail" and report.exit_code == 1
    assert "1 row (1) of 3 have no 'answer' label" in message(report, "data")


def test_empty_labels_warn_and_label_types_are_listed(tmp_path):
    rows = [{"input": "a", "answer": "1"}, {"input": "b", "answer": " "}, {"input": "c", "answer": "3"}]
    report = check(GALLERY / "good_sync.py", write_jsonl(tmp_path / "d.jsonl", rows))
    assert status(report)["data"] == "warn"
    assert "1 row (1) have an empty 'answer' label" in message(report, "data")
    assert "label types: str (3)" in message(report, "data")


# ------------------------------------------------------------------------------------------------ command line
def test_cli_report_and_exit_code_with_openrlhf_spellings(prompt_file, capsys):
    code, out, err = cli([str(EXAMPLE_FUNC), "--prompt_data", str(prompt_file), "--label_key", "answer",
                          "--micro_rollout_batch_size", "4"], capsys)
    assert code == 0, err
    for words in ("✓  load", "separation", "Rewards (6 of 6 samples scored)", "Histogram", "Result: 11 passed"):
        assert words in out


def test_cli_failure_exits_1_with_a_report_and_no_traceback(prompt_file, capsys):
    code, out, err = cli([str(GALLERY / "bad_raises_some_rows.py"), "--prompt-data", str(prompt_file),
                          "--label-key", "answer", "--micro-rollout-batch-size", "2"], capsys)
    assert code == 1
    assert "✗  exceptions" in out and "FAILED (exit 1)" in out
    assert "in spelled" in out  # the user's traceback, as part of the report
    assert "rlhfctl/" not in out and "Traceback" not in err


def test_cli_json(prompt_file, capsys):
    code, out, _ = cli([str(GALLERY / "bad_constant.py"), "--prompt-data", str(prompt_file), "--label-key",
                        "answer", "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and result["exit_code"] == 0 and result["ok"] is True
    checks = {c["name"]: c for c in result["checks"]}
    assert checks["constant"]["status"] == "warn" and result["summary"]["warn"] == 2
    assert result["stats"]["mean"] == 0.5 and result["histogram"]["counts"] == [6]


def test_cli_json_strict_failure(prompt_file, capsys):
    code, out, _ = cli([str(GALLERY / "bad_all_zeros.py"), "--prompt-data", str(prompt_file), "--label-key",
                        "answer", "--json", "--strict"], capsys)
    assert code == 1 and json.loads(out)["exit_code"] == 1


@pytest.mark.parametrize("args,words", [
    ([], "Usage: rlhfctl check-reward [OPTIONS]"),
    (["REWARD", "--label-key", "answer"], "--prompt-data is required"),
    (["REWARD", "--prompt-data", "/nonexistent/data.jsonl", "--label-key", "answer"], "no such file or folder"),
    (["REWARD", "--prompt-data", "DATA", "--label-key", "solution"],
     "no column 'solution' (--label-key); the columns are: input, answer"),
    (["REWARD", "--prompt-data", "DATA", "--input-key", "question", "--label-key", "answer"],
     "no column 'question' (--input-key)"),
    (["REWARD", "--prompt-data", "DATA"], "--responses oracle builds responses from the labels: give --label-key"),
    (["REWARD", "--prompt-data", "DATA", "--label-key", "answer", "--responses", "model"],
     "--responses must be oracle, shuffled, column:NAME or model:DIR"),
    (["REWARD", "--prompt-data", "DATA", "--label-key", "answer", "--responses", "column:output"],
     "--responses column:output: DATA has no column 'output'"),
    (["REWARD", "--prompt-data", "DATA", "--label-key", "answer", "--timeout", "0"], "--reward-timeout"),
    (["REWARD", "--prompt-data", "DATA", "--label-key", "answer", "--apply-chat-template"],
     "--apply-chat-template needs --pretrain"),
    (["http://127.0.0.1:9/get_reward,REWARD", "--prompt-data", "DATA", "--label-key", "answer"],
     "mixes URLs and other text"),
])
def test_cli_usage_errors_exit_2_with_a_message(args, words, prompt_file, capsys):
    swap = {"REWARD": str(GALLERY / "good_sync.py"), "DATA": str(prompt_file)}
    args = [a.replace("REWARD", swap["REWARD"]).replace("DATA", swap["DATA"]) for a in args]
    code, out, err = cli(args, capsys)
    assert code == 2, (out, err)
    assert words.replace("DATA", str(prompt_file)) in " ".join((out + err).split())
    assert "Traceback" not in out + err


def test_cli_non_string_response_column_is_a_usage_error(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [{"input": "a", "answer": "1", "response": 1},
                                              {"input": "b", "answer": "2", "response": 2}])
    code, _, err = cli([str(GALLERY / "good_sync.py"), "--prompt-data", str(data), "--label-key", "answer",
                        "--responses", "column:response"], capsys)
    assert code == 2 and "hold int (1), not a response string" in err


# ------------------------------------------------------------------------------------------------ reward servers
@pytest.fixture(scope="module")
def fake_server():
    """A small real FastAPI app on a free loopback port: one right endpoint and one per way a server goes wrong.
    (Request is imported at module level: FastAPI resolves these string annotations in the module's globals.)"""
    app = FastAPI()

    def exact(body: dict) -> list[float]:
        return [float(q.endswith(label)) for q, label in zip(body["query"], body["labels"])]

    @app.post("/get_reward")
    async def good(request: Request):
        rewards = exact(await request.json())
        return {"rewards": rewards, "scores": rewards, "extra_logs": {}}

    @app.post("/boom")
    async def boom():
        return JSONResponse({"detail": "CUDA out of memory"}, status_code=500)

    @app.post("/short")
    async def short(request: Request):
        return {"rewards": exact(await request.json())[:-1]}

    @app.post("/secure")
    async def secure(request: Request):
        if request.headers.get("authorization") != "Bearer s3cret":
            return JSONResponse({"detail": "missing or wrong token"}, status_code=401)
        return {"rewards": exact(await request.json())}

    @app.post("/text")
    async def text():
        return PlainTextResponse("ok")

    @app.post("/fails_on_42")
    async def fails_on_42(request: Request):
        body = await request.json()
        if "42" in body["labels"]:
            return JSONResponse({"detail": "cannot parse label 42"}, status_code=500)
        return {"rewards": exact(body)}

    from rlhfctl.serving.server import serve_in_thread

    handle = serve_in_thread(app)
    yield handle.url.rsplit("/", 1)[0]
    handle.stop()


def check_url(url: str, data: Path, **flags) -> Report:
    return check(url, data, rm_max_retries=0, **flags)


def test_url_of_a_right_server_passes(fake_server, prompt_file):
    report = check_url(f"{fake_server}/get_reward", prompt_file)
    assert report.exit_code == 0 and all(s == "pass" for s in status(report).values()), report.to_json()["checks"]
    assert "answered a query with a valid" in message(report, "load")
    assert "signature" not in status(report)


def test_bare_host_and_port_gets_the_get_reward_path(fake_server, prompt_file):
    assert check_url(fake_server, prompt_file).exit_code == 0


@pytest.mark.parametrize("path,words", [
    ("/boom", "answered HTTP 500: '{\"detail\":\"CUDA out of memory\"}'"),
    ("/short", "rewards has 0 values for 1 query"),
    ("/secure", "answered HTTP 401"),
    ("/text", "answered 200 but not JSON: 'ok'"),
    ("/nowhere", "answered HTTP 404"),
])
def test_url_of_a_broken_server_fails_the_load_check(fake_server, prompt_file, path, words):
    report = check_url(fake_server + path, prompt_file)
    assert status(report)["load"] == "fail" and report.exit_code == 1
    assert words in message(report, "load")


def test_url_with_the_api_key(fake_server, prompt_file):
    assert "pass --api-key" in message(check_url(f"{fake_server}/secure", prompt_file), "load")
    assert check_url(f"{fake_server}/secure", prompt_file, api_key="s3cret").exit_code == 0


def test_url_nobody_listens_on(prompt_file):
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    report = check_url(f"http://127.0.0.1:{port}/get_reward", prompt_file)
    assert "cannot reach the server" in message(report, "load") and report.exit_code == 1


def test_server_error_on_some_rows_is_located_at_the_sample(fake_server, prompt_file):
    report = check_url(f"{fake_server}/fails_on_42", prompt_file)
    assert status(report)["exceptions"] == "fail"
    text = message(report, "exceptions")
    assert text.startswith("sample 2 (row 2, label '42'):") and "cannot parse label 42" in text


def test_cli_url_json(fake_server, prompt_file, capsys):
    code, out, err = cli([f"{fake_server}/boom", "--prompt-data", str(prompt_file), "--label-key", "answer",
                          "--rm-max-retries", "0", "--json"], capsys)
    result = json.loads(out)
    assert code == 1 and result["checks"][0]["name"] == "load" and result["checks"][0]["status"] == "fail"
    assert "Traceback" not in err


@pytest.fixture
def serve_rm():
    """The real serve-rm app serving a gallery reward_func on a free loopback port."""
    from rlhfctl.config import ServeRMConfig
    from rlhfctl.rewards.function import FunctionReward
    from rlhfctl.serving.app import create_app
    from rlhfctl.serving.server import serve_in_thread

    handles = []

    def start(name: str) -> str:
        path = GALLERY / f"{name}.py"
        source = FunctionReward(path)
        handle = serve_in_thread(create_app(source, AppGroups.of(ServeRMConfig(reward_func=str(path)))))
        handles.append((handle, source))
        return handle.url

    yield start
    for handle, source in handles:
        handle.stop()
        source.close()


@pytest.mark.slow
def test_real_serve_rm_passes_with_a_good_function(serve_rm, prompt_file):
    report = check_url(serve_rm("good_dict"), prompt_file)
    assert report.exit_code == 0 and all(s == "pass" for s in status(report).values()), report.to_json()["checks"]


@pytest.mark.slow
def test_real_serve_rm_reports_the_functions_failure_at_its_sample(serve_rm, prompt_file):
    report = check_url(serve_rm("bad_raises_some_rows"), prompt_file)
    text = message(report, "exceptions")
    assert text.startswith("sample 2 (row 2, label '42'):") and "KeyError" in text
