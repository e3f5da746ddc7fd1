"""Bad judge options exit 2 with a message naming the option, before anything loads or starts."""

from __future__ import annotations

import pytest

from tests.helpers import run_cli


TEMPLATES = {
    "unknown.jinja": "Grade {{ question }}: {{ response }}",
    "no_response.jinja": "Grade {{ prompt }}",
    "syntax.jinja": "Grade {{ response ",
    "ok.jinja": "Q: {{ prompt }} A: {{ response }} Ref: {{ label }}",
}


@pytest.fixture()
def templates(tmp_path):
    for name, text in TEMPLATES.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize("args, needle", [
    (["--judge-template", "{t}/missing.jinja"], "--judge-template {t}/missing.jinja: no such file"),
    (["--judge-template", "{t}/unknown.jinja"], "unknown template variable question"),
    (["--judge-template", "{t}/no_response.jinja"], "never shows {{ response }}"),
    (["--judge-template", "{t}/syntax.jinja"], "Jinja syntax error"),
    (["--judge-score-tokens", "Yes,No"], "'Yes' has no score"),
    (["--judge-score-tokens", "1"], "at least two different tokens"),
    (["--judge-mode", "generate", "--judge-score-regex", "(\\d"], "not a valid regular expression"),
    (["--judge-mode", "vote"], "--judge-mode"),
    (["--judge-max-new-tokens", "0"], "--judge-max-new-tokens"),
    (["--judge-api-model", "m"], "--judge-api-model applies to --judge-url only"),
    (["--judge-rpm", "30"], "--judge-rpm applies to --judge-url only"),
    (["--reward-pretrain", "{t}"], "give exactly one of"),
    (["--judge-fallback-reward", "none"], "--judge-fallback-reward"),
    (["--judge-score-regex", "(\\d)"], "--judge-score-regex has no effect with --judge-mode logprobs"),
    (["--judge-mode", "generate", "--judge-score-tokens", "0,1"],
     "--judge-score-tokens has no effect with --judge-mode generate"),
    (["--judge-max-len", "4"], "--judge-max-len"),
])
def test_bad_judge_model_options_exit_2(templates, args, needle, capsys):
    args = [a.replace("{t}", str(templates)) for a in args]
    code, out, err = run_cli(["serve-rm", "--judge-model", str(templates), *args, "--print-config"], capsys)
    assert code == 2, (out, err)
    assert needle.replace("{t}", str(templates)) in err and "Traceback" not in err


@pytest.mark.parametrize("args, needle", [
    (["--judge-url", "ftp://host/v1"], "is not an http(s) URL"),
    (["--judge-url", "http://host:8000/get_reward"], "expected http://HOST:PORT, http://HOST:PORT/v1"),
    (["--judge-url", "http://host:8000/v1"], "--judge-url needs --judge-api-model"),
    (["--judge-url", "http://host:8000/v1", "--judge-api-model", "m", "--judge-rpm", "0"], "--judge-rpm"),
    (["--judge-url", "http://host:8000/v1", "--judge-api-model", "m", "--judge-rpm", "-5"], "--judge-rpm"),
    (["--judge-url", "http://host:8000/v1", "--judge-api-model", "m", "--judge-concurrency", "0"],
     "--judge-concurrency"),
    (["--judge-url", "http://host:8000/v1", "--judge-api-model", "m", "--judge-max-len", "100"],
     "--judge-max-len applies to --judge-model only"),
    (["--judge-url", "", "--judge-api-model", "m"], "--judge-url: is empty"),
    (["--judge-mode", "generate", "--reward-func", "r.py"], "--judge-mode applies to an LLM judge"),
    (["--judge-url", "http://host:8000", "--judge-api-model", "m", "--judge-chat-template"],
     "--judge-chat-template applies to --judge-model only"),
])
def test_bad_judge_url_options_exit_2(args, needle, capsys):
    code, out, err = run_cli(["serve-rm", *args, "--print-config"], capsys)
    assert code == 2, (out, err)
    assert needle in err and "Traceback" not in err


def test_a_good_judge_config_prints_and_warns_about_reward_model_options(templates, capsys):
    code, out, err = run_cli(["serve-rm", "--judge-model", str(templates), "--judge-template",
                               str(templates / "ok.jinja"), "--judge-score-tokens", "No=0,Yes=1",
                               "--normalize-reward", "--print-config"], capsys)
    assert code == 0, err
    assert "judge_score_tokens: No=0,Yes=1" in out
    assert "--normalize-reward" in err and "--judge-model does not use it" in err


@pytest.mark.parametrize("args, needle", [
    (["--judge-model", "{d}", "--remote-rm-url", "http://x:1/get_reward"], "a judge (--judge-model, --judge-url) is"),
    (["--judge-url", "http://x:1", "--judge-api-model", "m", "--judge-rpm", "0"], "--judge-rpm"),
    ([], "give a reward"),
])
def test_train_ppo_judge_options_exit_2(tmp_path, prompt_file, args, needle, capsys):
    args = [a.format(d=tmp_path) for a in args]
    code, out, err = run_cli(["train-ppo", "--pretrain", str(tmp_path), "--prompt-data", str(prompt_file),
                               *args, "--print-config"], capsys)
    assert code == 2 and needle in err, err


@pytest.mark.parametrize("reward, args", [
    ("judge", []),
    ("examples/reward_func.py", ["--judge-model", "examples"]),
])
def test_check_reward_judge_needs_both_the_word_and_a_judge(prompt_file, reward, args, capsys):
    code, out, err = run_cli(["check-reward", reward, *args, "--prompt-data", str(prompt_file)], capsys)
    assert code == 2 and "`judge`" in err, err
