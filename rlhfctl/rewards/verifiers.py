"""The built-in verifiers, written as reward_func.py functions: `math`, `exact` and `format`.

They are loaded by path into FunctionPool's worker processes (rewards/verifier_source.py), exactly as a user's
reward_func.py is, so a verifier stuck in sympy or in a backtracking regex holds the GIL of a process that its
timeout kills, never the trainer's or the server's. Each takes (queries, prompts, labels) and its options as
keywords, and reads only the response (the query with its prompt removed).
"""

from __future__ import annotations

import json
import re
import string

from rlhfctl.rewards.math_answers import equivalent, final_answer
from rlhfctl.rewards.pairwise import response_of

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_text(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def accepted(label: str) -> list[str]:
    """A label is one answer, or a JSON list of accepted answers (`["Paris", "paris, france"]`)."""
    text = label.strip()
    if text.startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            return [label]
        if isinstance(values, list):
            return [str(v) for v in values]
    return [label]


def math_reward(queries: list[str], prompts: list[str], labels: list[str], **_: object) -> list[float]:
    """1 when the response's final answer (\\boxed{}, "answer is", "####" or its last number) equals the label as
    a number or expression (rewards/math_answers.py), else 0."""
    return [float(any(equivalent(final_answer(response_of(q, p)), a) for a in accepted(label)))
            for q, p, label in zip(queries, prompts, labels)]


def exact_reward(queries: list[str], prompts: list[str], labels: list[str], **_: object) -> list[float]:
    """1 when the whole response equals the label (or one of a JSON list of labels) after normalize_text."""
    return [float(normalize_text(response_of(q, p)) in {normalize_text(a) for a in accepted(label)})
            for q, p, label in zip(queries, prompts, labels)]


def format_reward(queries: list[str], prompts: list[str], labels: list[str], *, format_regex: str | None = None,
                  **_: object) -> list[float]:
    """1 when the whole response (stripped) matches --format-regex (`.` also matches newlines), else 0."""
    if format_regex is None:
        raise ValueError("the format verifier needs --format-regex")
    pattern = re.compile(format_regex, re.DOTALL)
    return [float(pattern.fullmatch(response_of(q, p).strip()) is not None) for q, p in zip(queries, prompts)]
