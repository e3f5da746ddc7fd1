"""Rule-based reward for the arithmetic example: 1 when the response's final number equals the label, else 0.

The OpenRLHF contract: `reward_func(queries, prompts, labels, **kwargs)`, where a query is the prompt followed by
the policy's response, as decoded text. Serve it with `rlhfctl serve-rm`, check it with `rlhfctl check-reward`, or
pass the file to `train-ppo --remote-rm-url`. Besides the reward it logs, per sample, through `extra_logs`:
  format_ok    1 when the response is exactly one integer written plainly ("47", not "047" or "4 7"),
               the format the policy was taught;
  exact_match  1 when the final number of the response equals the label (the reward itself).
Only the response is read: a number inside the prompt never counts as an answer.
"""

from __future__ import annotations

import re

import torch

# Decoded queries may keep the tokenizer's special tokens (OpenRLHF decodes with skip_special_tokens=False):
# anything written <...> or <|...|> is markup, not an answer.
_SPECIAL = re.compile(r"<\|[^|<>]*\|>|</?s>|<pad>|<unk>")
_NUMBER = re.compile(r"-?\d+")
_INTEGER_ONLY = re.compile(r"-?(0|[1-9]\d*)")  # canonical: no sign on its own, no leading zero


def response_of(query: str, prompt: str) -> str:
    """The policy's response: the query with its prompt (and any special tokens) removed, whitespace stripped.

    The query normally starts with the prompt; when a tokenizer round trip changed the prompt's text, the part
    after the prompt's last occurrence is used, and when the prompt cannot be found at all, the text after the
    last "=" (the end of every prompt of this task).
    """
    query, prompt = _SPECIAL.sub("", query), _SPECIAL.sub("", prompt)
    if prompt and query.startswith(prompt):
        rest = query[len(prompt):]
    elif prompt and prompt in query:
        rest = query[query.rindex(prompt) + len(prompt):]
    else:
        rest = query.rsplit("=", 1)[-1]
    return rest.strip()


def final_number(text: str) -> int | None:
    """The last integer written in `text`, or None when there is none."""
    found = _NUMBER.findall(text)
    return int(found[-1]) if found else None


def _label_value(label: object) -> int | None:
    try:
        return int(str(label).strip())
    except ValueError:
        return None


def reward_func(queries: list[str], prompts: list[str], labels: list[str], **kwargs: object) -> dict:
    """Exact match of the final number of each response against its label (a string such as "47")."""
    if not (len(queries) == len(prompts) == len(labels)):
        raise ValueError(f"got {len(queries)} queries, {len(prompts)} prompts and {len(labels)} labels")
    exact, format_ok = [], []
    for query, prompt, label in zip(queries, prompts, labels):
        response = response_of(query, prompt)
        answer, expected = final_number(response), _label_value(label)
        exact.append(float(answer is not None and answer == expected))
        format_ok.append(float(_INTEGER_ONLY.fullmatch(response) is not None))
    rewards = torch.tensor(exact, dtype=torch.float32)
    return {
        "rewards": rewards,
        "scores": rewards.clone(),
        "extra_logs": {"format_ok": torch.tensor(format_ok), "exact_match": rewards.clone()},
    }
