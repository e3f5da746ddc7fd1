"""A rule-based reward for math word problems: 1 when the response's final number equals the label, else 0.

Copy it and change `answer_matches` for your task. It follows OpenRLHF's contract, so the same file works with
`rlhfctl train-ppo --remote-rm-url reward_func.py`, `rlhfctl serve-rm --reward-func reward_func.py` and OpenRLHF:

    reward_func(queries, prompts, labels, **kwargs) -> {"rewards": Tensor[N], "scores": Tensor[N],
                                                         "extra_logs": {name: Tensor[N]}}

`queries` are prompt + response (the prompt exactly as the policy saw it), `labels` the dataset's `--label-key`
column as strings. Check it before training:

    rlhfctl check-reward examples/reward_func.py --prompt-data examples/data.jsonl --label-key answer
"""

from __future__ import annotations

import re
from fractions import Fraction

import torch

# A number as people write it in an answer: -12, 3.5, 1,234, 2/3.
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
# Special tokens a decoded query may keep (OpenRLHF decodes with skip_special_tokens=False): </s>, <|im_end|>,
# <|eot_id|>, <eos>, <pad>... They are markup, not part of the answer.
SPECIAL_TOKEN = re.compile(r"<\|[^<>|]*\|>|<｜[^<>]*｜>|</?s>|<eos>|<pad>|<unk>")


def response_of(query: str, prompt: str) -> str:
    """The response part of a query, without special tokens; the whole query if the prompt is not its prefix
    (e.g. when a tokenizer round trip changed the prompt's text)."""
    response = query[len(prompt):] if query.startswith(prompt) else query
    return SPECIAL_TOKEN.sub("", response)


def to_number(text: str) -> Fraction | None:
    """'1,234' -> 1234, '2/3' -> 2/3, '0.50' -> 1/2; None if it is not a number."""
    try:
        return Fraction(text.replace(",", "").strip())
    except (ValueError, ZeroDivisionError):
        return None


def final_number(response: str) -> str | None:
    found = NUMBER.findall(response)
    return found[-1].rstrip(",") if found else None


def answer_matches(response: str, label: str) -> bool:
    """Exact match of the response's final number with the label, compared as numbers (so '12.0' == '12')."""
    guess, truth = final_number(response), to_number(label)
    return guess is not None and truth is not None and to_number(guess) == truth


def ends_with_answer(response: str) -> bool:
    """Format: the final number closes the response (only punctuation after it), as in '... The answer is 12.'"""
    return bool(re.search(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?\s*[.!]?\s*$", response))


def reward_func(queries: list[str], prompts: list[str], labels: list[str], **kwargs) -> dict:
    responses = [response_of(q, p) for q, p in zip(queries, prompts)]
    correct = [float(answer_matches(r, label)) for r, label in zip(responses, labels)]
    has_number = [float(final_number(r) is not None) for r in responses]
    ends = [float(ends_with_answer(r)) for r in responses]
    rewards = torch.tensor(correct)
    return {
        "rewards": rewards,  # what PPO's advantages are computed from
        "scores": rewards.clone(),  # in [0, 1], read by dynamic filtering
        "extra_logs": {  # logged per step; format problems show up here before they show up in accuracy
            "correct": torch.tensor(correct),
            "format_has_number": torch.tensor(has_number),
            "format_ends_with_answer": torch.tensor(ends),
        },
    }
