"""The LLM judge run here (serve-rm / train-ppo / check-reward --judge-model): the expected score of the score tokens,
generate mode's parsing and fallback, batching, the template, and the arithmetic demo's trained judge."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhfctl.config import ServeRMConfig
from rlhfctl.errors import UsageError
from rlhfctl.rewards.judge_model import JudgeModel
from rlhfctl.rewards.judge import JudgeTemplate, parse_number, parse_score_tokens, compile_regex
from rlhfctl.serving.app import create_app
from rlhfctl.serving.server import serve_in_thread
from rlhfctl.config.slices import AppGroups, ServedModelGroups
from tests.helpers import ARITHMETIC, run_cli

ARITHMETIC_JUDGE = dict(judge_model=str(ARITHMETIC / "judge"), judge_template=str(ARITHMETIC / "judge_template.jinja"),
                        judge_score_tokens="0,1")
QUERIES = ["What is 2 + 3? 5", "What is 10 - 4? The answer is 6, since ten minus four is six.", "hi"]
PROMPTS = ["What is 2 + 3?", "What is 10 - 4?", ""]
LABELS = ["5", "6", ""]


def judge_of(cfg: ServeRMConfig) -> JudgeModel:
    return JudgeModel.from_config(cfg, cfg, batching=cfg, server=cfg)


def test_template_splits_the_response_off_the_prompt_and_shows_the_label():
    template = JudgeTemplate("{{ label }}|{{ prompt }}|{{ response }}")
    assert template.render_batch(QUERIES, PROMPTS, LABELS) == [
        "5|What is 2 + 3?| 5", "6|What is 10 - 4?| The answer is 6, since ten minus four is six.", "||hi"]
    # A query that does not start with its prompt is judged whole.
    assert template.render_batch(["other text"], ["What"], [""]) == ["|What|other text"]


def test_score_tokens_and_number_parsing():
    assert [(t.text, t.value) for t in parse_score_tokens("No=0,Yes=1")] == [("No", 0.0), ("Yes", 1.0)]
    assert [t.value for t in parse_score_tokens("0,1,2")] == [0.0, 1.0, 2.0]
    regex = compile_regex(r"-?\d+(?:\.\d+)?")
    assert parse_number("Score: 7/10", regex) == 7.0 and parse_number("no idea", regex) is None
    assert parse_number("rating=8.5", compile_regex(r"rating=(\S+)")) == 8.5
    for bad, needle in (("Yes", "has no score"), ("1", "at least two"), ("No=0,No=1", "at least two"),
                        ("x=inf,y=1", "finite")):
        with pytest.raises(UsageError, match=needle):
            parse_score_tokens(bad)


def test_logprobs_reward_is_the_expected_score_under_the_full_softmax(tiny_policy_dir):
    judge = judge_of(ServeRMConfig(judge_model=str(tiny_policy_dir)))
    got = judge.score(QUERIES, PROMPTS, LABELS).rewards
    model = AutoModelForCausalLM.from_pretrained(tiny_policy_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_policy_dir)
    digits = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]
    for text, reward in zip(judge.render(QUERIES, PROMPTS, LABELS), got):
        with torch.no_grad():
            probs = torch.softmax(model(**tokenizer(text, return_tensors="pt")).logits[0, -1].double(), -1)[digits]
        assert reward == pytest.approx(float((probs / probs.sum()) @ torch.arange(10.0).double()), abs=1e-6)
        assert 0 <= reward <= 9


def test_a_texts_reward_does_not_depend_on_its_batch(tiny_policy_dir):
    judge = judge_of(ServeRMConfig(judge_model=str(tiny_policy_dir)))
    together = judge.score(QUERIES, PROMPTS, LABELS).rewards
    alone = [judge.score([q], [p], [lab]).rewards[0] for q, p, lab in zip(QUERIES, PROMPTS, LABELS)]
    assert together == pytest.approx(alone, abs=1e-5)
    assert len(set(round(r, 6) for r in together)) == 3  # the texts are told apart


def test_generate_mode_parses_and_counts_fallbacks(tiny_policy_dir):
    writer = {k: v for k, v in ARITHMETIC_JUDGE.items() if k != "judge_score_tokens"}  # it writes "0" or "1"
    arithmetic = judge_of(ServeRMConfig(**writer, judge_mode="generate", judge_max_new_tokens=1))
    batch = arithmetic.score(["12+35=47", "12+35=48"], ["12+35=", "12+35="], ["", ""])
    assert set(batch.rewards) <= {0.0, 1.0} and batch.extra_logs == {"judge_unparsed": [0.0, 0.0]}
    # A random model writes no six-digit number: every answer gets the fallback, and is counted.
    noisy = judge_of(ServeRMConfig(judge_model=str(tiny_policy_dir), judge_mode="generate",
                                                 judge_score_regex=r"\d{6}", judge_fallback_reward=-1.5,
                                                 judge_max_new_tokens=3))
    batch = noisy.score(QUERIES, PROMPTS, LABELS)
    assert batch.rewards == [-1.5] * 3 and batch.extra_logs == {"judge_unparsed": [1.0] * 3}


def test_the_arithmetic_judge_prefers_right_answers_to_the_policys_mistake(monkeypatch):
    monkeypatch.syspath_prepend(str(ARITHMETIC))
    from train_models import forgot_carry, needs_carry

    judge = judge_of(ServeRMConfig(**ARITHMETIC_JUDGE))
    rows = [json.loads(line) for line in (ARITHMETIC / "test.jsonl").read_text().splitlines()[:120]]
    prompts = [r["input"] for r in rows if needs_carry(r["input"])]
    answers = {r["input"]: r["answer"] for r in rows}
    right = judge.score([p + answers[p] for p in prompts], prompts, [""] * len(prompts)).rewards
    wrong = judge.score([p + forgot_carry(p) for p in prompts], prompts, [""] * len(prompts)).rewards
    assert sum(a > b for a, b in zip(right, wrong)) >= 0.9 * len(prompts)
    assert (sum(right) - sum(wrong)) / len(prompts) > 0.4


def test_the_reference_judge_compares_the_response_with_the_label(monkeypatch):
    """judge_reference/ (serve_judge_reference.yaml) pays a right answer and not the policy's mistake, and it reads
    the label: the right answer scored against a wrong label loses its reward."""
    monkeypatch.syspath_prepend(str(ARITHMETIC))
    from train_models import forgot_carry, needs_carry

    judge = judge_of(ServeRMConfig(judge_model=str(ARITHMETIC / "judge_reference"), judge_score_tokens="0,1",
                                   judge_template=str(ARITHMETIC / "judge_reference_template.jinja")))
    rows = [json.loads(line) for line in (ARITHMETIC / "test.jsonl").read_text().splitlines()[:120]]
    rows = [r for r in rows if needs_carry(r["input"])]
    prompts, labels = [r["input"] for r in rows], [r["answer"] for r in rows]
    right = judge.score([p + lab for p, lab in zip(prompts, labels)], prompts, labels).rewards
    wrong = judge.score([p + forgot_carry(p) for p in prompts], prompts, labels).rewards
    mislabeled = judge.score([p + lab for p, lab in zip(prompts, labels)], prompts, [forgot_carry(p) for p in prompts])
    assert sum(a > 0.5 > b for a, b in zip(right, wrong)) >= 0.9 * len(prompts)
    assert sum(r < 0.5 for r in mislabeled.rewards) >= 0.9 * len(prompts)


def test_served_judge_batches_requests_and_counts_unparsed_answers(tiny_policy_dir):
    cfg = ServeRMConfig(judge_model=str(tiny_policy_dir), judge_mode="generate", judge_score_regex=r"\d{6}",
                        judge_max_new_tokens=2, judge_fallback_reward=-1.0)
    judge = judge_of(cfg)
    with serve_in_thread(create_app(judge, AppGroups.of(cfg))) as server, httpx.Client(timeout=60) as client:
        answer = client.post(server.url, json={"query": QUERIES, "prompts": PROMPTS, "labels": LABELS})
        assert answer.status_code == 200, answer.text
        assert answer.json()["rewards"] == [-1.0] * 3
        assert answer.json()["extra_logs"] == {"judge_unparsed": [1.0] * 3}
        metrics = client.get(server.url.replace("/get_reward", "/metrics")).text
        assert re.search(r"^rlhfctl_judge_unparsed_total 3\.0$", metrics, re.M), metrics
        bad = client.post(server.url, json={"query": QUERIES, "prompts": PROMPTS[:1]})
        assert bad.status_code == 422


def test_check_reward_separates_right_from_wrong_answers_with_the_judge(capsys):
    code, out, err = run_cli(["check-reward", "judge", "--judge-model", ARITHMETIC_JUDGE["judge_model"],
                               "--judge-template", ARITHMETIC_JUDGE["judge_template"], "--judge-score-tokens", "0,1",
                               "--prompt-data", str(ARITHMETIC / "test.jsonl"), "--label-key", "answer",
                               "--max-samples", "48", "--json"], capsys)
    report = json.loads(out)
    checks = {c["name"]: c["status"] for c in report["checks"]}
    assert checks["load"] == "pass" and checks["separation"] == "pass", (checks, err)
    assert report["stats"]["separation"]["difference"] > 0.3


@pytest.mark.parametrize("score_tokens, needle", [
    ("Y=1,N=0", "not in the judge's vocabulary"),
    ("10=1,0=0", "is 2 tokens of the judge's vocabulary"),
])
def test_score_tokens_outside_the_vocabulary_exit_2(score_tokens, needle, capsys):
    code, out, err = run_cli(["check-reward", "judge", "--judge-model", ARITHMETIC_JUDGE["judge_model"],
                               "--judge-score-tokens", score_tokens, "--prompt-data",
                               str(ARITHMETIC / "test.jsonl"), "--label-key", "answer"], capsys)
    assert code == 2 and needle in err, err


@pytest.mark.slow
def test_serve_rm_runs_the_judge_in_its_model_process():
    """How `serve-rm --judge-model` runs it: prompts and labels cross to the worker, rewards as in-process."""
    from rlhfctl.serving.worker import ModelProcess

    cfg = ServeRMConfig(**ARITHMETIC_JUDGE, num_threads=1)
    queries, prompts = ["12+35=47", "12+35=48", "17+25=42"], ["12+35=", "12+35=", "17+25="]
    expected = judge_of(cfg).score(queries, prompts, [""] * 3).rewards
    worker = ModelProcess(ServedModelGroups.of(cfg))
    assert worker.launch()["batch_size"] == 16
    try:
        with serve_in_thread(create_app(worker, AppGroups.of(cfg))) as server, httpx.Client(timeout=60) as client:
            answer = client.post(server.url, json={"query": queries, "prompts": prompts})
            assert answer.json()["rewards"] == pytest.approx(expected, abs=1e-5)
    finally:
        worker.close()
    bad = ServeRMConfig(**{**ARITHMETIC_JUDGE, "judge_score_tokens": "Y=1,N=0"})
    with pytest.raises(UsageError, match="'Y' is not in the judge's vocabulary"):
        ModelProcess(ServedModelGroups.of(bad)).launch()


def test_a_judge_named_by_hub_id_resolves_through_the_cache(tmp_path, monkeypatch, capsys):
    from tests.helpers.hub_cache import add_to_hub_cache

    add_to_hub_cache(tmp_path, "org/arith-judge", ARITHMETIC / "judge")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    args = ["check-reward", "judge", "--judge-template", ARITHMETIC_JUDGE["judge_template"],
            "--judge-score-tokens", "0,1", "--prompt-data", str(ARITHMETIC / "test.jsonl"), "--label-key", "answer",
            "--max-samples", "8", "--json"]
    code, out, err = run_cli([*args[:2], "--judge-model", "org/arith-judge", *args[2:]], capsys)
    assert json.loads(out)["checks"][0] == {**json.loads(out)["checks"][0], "name": "load", "status": "pass"}, err
    code, out, err = run_cli([*args[:2], "--judge-model", "org/not-cached", *args[2:]], capsys)
    assert code == 2 and "org/not-cached" in err and "Traceback" not in err


def test_the_chat_template_wraps_the_rendered_prompt(tiny_policy_dir):
    judge = judge_of(ServeRMConfig(judge_model=str(tiny_policy_dir), judge_chat_template=True))
    text = judge.render(QUERIES[:1], PROMPTS[:1], LABELS[:1])[0]
    assert text.startswith("<s><|user|>You are grading") and text.endswith("Score:</s><|assistant|>")
    assert judge.encode([text])[0][0] == judge.tokenizer.bos_token_id  # one BOS, from the template
    assert judge.encode([text])[0][1] != judge.tokenizer.bos_token_id


def test_a_judge_combines_with_other_rewards_as_the_source_judge():
    """--reward acc=reward_func.py:1 --reward j=judge:0.5 --judge-model DIR: the total is the weighted sum of the
    reward function and the judge, each scored alone."""
    from rlhfctl.config import TrainPPOConfig
    from rlhfctl.config.reward_groups import SourceGroups
    from rlhfctl.rewards.factory import open_combined, open_function, open_judge

    cfg = TrainPPOConfig(pretrain=str(ARITHMETIC / "policy"), prompt_data=str(ARITHMETIC / "test.jsonl"),
                         reward={"acc": {"source": str(ARITHMETIC / "reward_func.py")}, "j": "judge:0.5"},
                         **ARITHMETIC_JUDGE)
    rows = [json.loads(line) for line in (ARITHMETIC / "test.jsonl").read_text().splitlines()[:6]]
    prompts = [r["input"] for r in rows]
    labels = [str(r["answer"]) for r in rows]
    queries = [p + (a if i % 2 else "0") for i, (p, a) in enumerate(zip(prompts, labels))]
    groups = SourceGroups.of(cfg)
    combined, func, judge = (open_combined(cfg.reward, groups), open_function(cfg.reward["acc"].source, cfg, cfg),
                             open_judge(groups))
    try:
        total = combined.score(queries, prompts, labels).rewards
        expected = [f + 0.5 * j for f, j in zip(func.score(queries, prompts, labels).rewards,
                                                judge.score(queries, prompts, labels).rewards)]
    finally:
        for source in (combined, func, judge):
            source.close()
    assert total == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("args, needle", [
    (["--reward", "j=judge:1"], "a reward SOURCE `judge`"),
    (["--reward", "acc=examples/reward_func.py:1", "--judge-model", "examples"], "no reward SOURCE is `judge`"),
])
def test_judge_source_and_judge_options_go_together(prompt_file, args, needle, capsys):
    code, out, err = run_cli(["train-ppo", "--pretrain", "examples", "--prompt-data", str(prompt_file), *args,
                               "--print-config"], capsys)
    assert code == 2 and needle in err, err
