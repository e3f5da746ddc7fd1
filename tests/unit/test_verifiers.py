"""The built-in verifiers: math answer equivalence on a table of pairs, SQuAD-style exact match, the format regex,
a per-sample timeout that really stops a verifier holding the GIL, their options' checks, and check-reward with
the `math` verifier on the arithmetic example (oracle vs shuffled answers)."""

from __future__ import annotations

import time

import pytest

from rlhfctl.checks import run_checks
from rlhfctl.config import resolve
from rlhfctl.errors import ConfigError
from rlhfctl.rewards.math_answers import equivalent, final_answer
from rlhfctl.rewards.verifier_source import VerifierReward
from rlhfctl.rewards.verifiers import normalize_text
from tests.helpers import ROOT

ARITHMETIC = ROOT / "examples" / "arithmetic" / "test.jsonl"

EQUIVALENT = [
    ("\\boxed{\\frac{1}{2}}", "0.5"), ("The answer is 1/2.", "\\frac12"), ("\\boxed{50\\%}", "0.5"),
    ("50%", "50"), ("1,234,567", "1234567"), ("$1,000$", "1000"), ("\\boxed{-\\dfrac{3}{4}}", "-0.75"),
    ("2.50", "2.5"), ("1e3", "1000"), ("x = 7", "7"), ("#### 42", "42"), ("so we get 41 and finally 42", "42"),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}"), ("\\boxed{\\frac{\\pi}{2}}", "\\pi/2"), ("\\boxed{(1, 2)}", "(1,2)"),
    ("\\boxed{x^2+2x+1}", "(x+1)^2"), ("\\boxed{10^\\circ}", "10"), ("\\boxed{5 \\text{ cm}}", "5"),
    ("\\boxed{\\left( 3, \\frac{1}{2} \\right)}", "(3, 0.5)"), ("Answer: \\boxed{\\boxed{7}}", "7"),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\sqrt{3}/2"), ("\\boxed{\\text{Paris}}", "paris"), ("\\boxed{-5}", "−5"),
]
NOT_EQUIVALENT = [
    ("\\boxed{\\frac{1}{3}}", "0.333"), ("\\boxed{2}", "3"), ("1,234", "1.234"), ("\\boxed{(1, 2)}", "(2,1)"),
    ("\\boxed{x^2}", "2x"), ("", "0"), ("The answer is 12.", "-12"), ("\\boxed{\\sqrt{2}}", "1.414"),
    ("I don't know", "5"), ("\\boxed{1, 2, 3}", "(1, 2)"), ("\\boxed{cat}", "act"), ("\\boxed{\\frac{1}{0}}", "1"),
]


@pytest.fixture
def verifier():
    """VerifierReward(...) that is closed after the test."""
    opened: list[VerifierReward] = []

    def make(kind: str, **kw) -> VerifierReward:
        opened.append(VerifierReward(kind, **kw))
        return opened[-1]

    yield make
    for source in opened:
        source.close()


@pytest.mark.parametrize("response,label", EQUIVALENT)
def test_equivalent_answers(response, label):
    assert equivalent(final_answer(response), label)


@pytest.mark.parametrize("response,label", NOT_EQUIVALENT)
def test_different_answers(response, label):
    assert not equivalent(final_answer(response), label)


@pytest.mark.parametrize("a,b,same", [("The Eiffel Tower!", "eiffel   tower", True), ("An apple.", "apple", True),
                                      ("Paris, France", "paris france", True), ("Paris", "Lyon", False),
                                      ("theatre", "atre", False)])
def test_exact_match_normalisation(a, b, same):
    assert (normalize_text(a) == normalize_text(b)) is same


def test_the_verifiers_read_the_response_not_the_prompt(verifier):
    exact = verifier("exact", timeout=5)
    prompts = ["Q: capital? ", "Q: capital? ", "Q: 2? "]
    batch = exact.score([p + r for p, r in zip(prompts, ["The Paris", "Lyon", "two"])], prompts,
                        ["paris", "paris", '["2", "Two"]'])
    assert batch.rewards == [1.0, 0.0, 1.0] and batch.extra_logs == {"timeout": [0.0, 0.0, 0.0]}
    math = verifier("math", timeout=5)
    assert math.score(["7+5=12", "7+5=\\boxed{13}"], ["7+5=", "7+5="], ["12", "12"]).rewards == [1.0, 0.0]


def test_a_verifier_stuck_in_a_regex_is_killed_and_the_rest_scored(verifier):
    # (a+)+b?c on "aaa...ad" backtracks for ages inside re, holding the GIL: only killing its process stops it.
    options = {"format_regex": r"(a+)+b?c"}
    fmt = verifier("format", timeout=1.0, workers=2, options=options)
    started = time.monotonic()
    batch = fmt.score(["a" * 40 + "d", "aac", "xyz"], ["", "", ""], ["", "", ""])
    took = time.monotonic() - started
    assert batch.rewards == [0.0, 1.0, 0.0] and batch.extra_logs["timeout"] == [1.0, 0.0, 0.0]
    assert took < 10, f"the stuck sample was not stopped ({took:.1f}s)"
    assert fmt.score(["aaac"], [""], [""]).rewards == [1.0]  # a fresh worker took the killed one's place
    assert fmt.health()["status"] == "degraded"


def _problems(command: str, options: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        resolve(command, options)
    return str(caught.value)


def test_verifier_options_are_checked():
    data = {"prompt_data": str(ARITHMETIC), "label_key": "answer"}
    assert "--format-regex PATTERN: give one" in _problems("check-reward", {"reward": "format", **data})
    assert "is not a regular expression" in _problems("check-reward", {"reward": "format", "format_regex": "(",
                                                                       **data})
    assert "--verifier-timeout applies to the built-in verifiers only" in _problems(
        "serve-rm", {"reward_func": "x.py", "verifier_timeout": 2})
    assert "--sandbox-workers applies to the code sandbox only" in _problems(
        "train-ppo", {"reward": "math", "sandbox_workers": 4, "pretrain": "p", "prompt_data": "d"})
    assert "benchmarks/sandbox.py" in _problems("bench-rm", {"reward": "sandbox"})
    assert "--format-regex applies to a reward SOURCE `format` only" in _problems(
        "check-reward", {"reward": "math", "format_regex": "x", **data})
    cfg = resolve("train-ppo", {"reward": ["ok=math:1", "shape=format:0.1"], "format_regex": r"-?\d+",
                                "pretrain": "p", "prompt_data": "d"})
    assert {t.source for t in cfg.reward.values()} == {"math", "format"}


@pytest.mark.parametrize("responses,mean", [("oracle", 1.0), ("shuffled", None)])
def test_check_reward_with_math_separates_right_from_shuffled_answers(responses, mean):
    report = run_checks(resolve("check-reward", {"reward": "math", "prompt_data": str(ARITHMETIC),
                                                 "input_key": "input", "label_key": "answer",
                                                 "responses": responses, "micro_rollout_batch_size": 16}))
    assert report.exit_code == 0
    if mean is not None:
        assert report.stats["mean"] == mean
    else:
        assert report.stats["mean"] < 0.1
    assert report.stats["separation"]["mismatched_mean"] < 0.1
    assert {c.name: c.status for c in report.checks}["separation"] == "pass"


def test_a_verifier_travels_to_a_ray_worker_as_its_settings(verifier):
    import pickle

    fmt = verifier("format", timeout=2.0, options={"format_regex": r"\d+"})
    copy = pickle.loads(pickle.dumps(fmt))  # as a Ray actor receives it: a pool of its own, the same options
    try:
        assert copy.pool is not fmt.pool and copy.timeout == 2.0
        assert copy.score(["12", "x"], ["", ""], ["", ""]).rewards == fmt.score(["12", "x"], ["", ""], ["", ""]).rewards
    finally:
        copy.close()
