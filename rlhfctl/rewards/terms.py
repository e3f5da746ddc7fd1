"""The `--reward NAME=SOURCE:WEIGHT` term syntax: how a combined reward is written, on the command line or in YAML.

Pure parsing, no reward code: the option schema types `--reward` with it, and rewards/factory.py opens each term.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator, model_validator


class RewardTerm(BaseModel):
    """One named source of a combined reward: a URL (or comma-separated replicas), a reward_func.py, or a reward
    model folder / Hub ID, and its weight in the sum."""

    model_config = ConfigDict(extra="forbid")
    source: str
    weight: float = 1.0

    @field_validator("source")
    @classmethod
    def _not_blank(cls, source: str) -> str:
        if not source.replace(",", "").strip():
            raise ValueError("is empty: give a URL, a reward_func.py, a model, math, exact, format or sandbox, or leave "
                             "the option out")
        return source

    @model_validator(mode="after")
    def _finite(self) -> "RewardTerm":
        if not math.isfinite(self.weight):
            raise ValueError(f"weight must be a finite number, not {self.weight}")
        return self


_TERM_NAME = re.compile(r"[A-Za-z_][\w.-]*")


def split_term(text: str) -> tuple[str | None, str, float]:
    """'NAME=SOURCE:WEIGHT' -> (NAME, SOURCE, WEIGHT); NAME= and :WEIGHT are optional (weight 1). A trailing
    ':NUMBER' right after a bare http://HOST is that URL's port, not a weight."""
    name, sep, rest = text.partition("=")
    if not sep or not _TERM_NAME.fullmatch(name.strip()):
        name, rest = None, text
    source, colon, tail = rest.rpartition(":")
    weight = 1.0
    try:
        value = float(tail)
        last = source.split(",")[-1].strip()  # replicas: the port of the last URL is not a weight either
        if colon and last and not re.fullmatch(r"https?://[^/:]+", last):
            rest, weight = source, value
    except ValueError:
        pass
    return (name.strip() if name else None), rest.strip(), weight


def parse_terms(value: Any) -> Any:
    """--reward given as NAME=SOURCE:WEIGHT strings (repeated flags, or a YAML list), or the YAML mapping
    {name: {source, weight}} / {name: "SOURCE:WEIGHT"}, into {name: RewardTerm}. An unnamed lone source is called
    'reward'."""
    if value is None or isinstance(value, dict) and not value:
        return None if value is None else value
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        out: dict[str, Any] = {}
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"each --reward is NAME=SOURCE:WEIGHT text, not {item!r}")
            name, source, weight = split_term(item)
            if name is None and len(value) > 1:
                raise ValueError(f"{item!r}: name each of several rewards, as NAME=SOURCE:WEIGHT")
            name = name or "reward"
            if name in out:
                raise ValueError(f"the name {name!r} is given twice")
            out[name] = {"source": source, "weight": weight}
        return out
    if isinstance(value, dict):
        out = {}
        for name, spec in value.items():
            if not _TERM_NAME.fullmatch(str(name)):
                raise ValueError(f"{name!r} is not a reward name (letters, digits, _ . -)")
            if isinstance(spec, str):
                _, source, weight = split_term(spec)
                spec = {"source": source, "weight": weight}
            out[str(name)] = spec
        return out
    return value


RewardTerms = Annotated[dict[str, RewardTerm], BeforeValidator(parse_terms)]


VERIFIER_SOURCES = ("math", "exact", "format")
"""SOURCE words naming a built-in verifier (rewards/verifiers.py defines WORD_reward for each)."""


def source_kind(source: str) -> Literal["url", "function", "model", "judge", "verifier", "sandbox"]:
    """What a reward SOURCE names: reward server URL(s), a reward_func.py, the word `judge` (the LLM judge of
    --judge-model / --judge-url), a built-in verifier (`math`, `exact`, `format`), the code sandbox (`sandbox`), or
    else a model folder or Hub ID (a local folder with one of these names is written ./math)."""
    text = source.strip()
    if text in ("judge", "sandbox"):
        return text  # type: ignore[return-value]
    if text in VERIFIER_SOURCES:
        return "verifier"
    if text.startswith(("http://", "https://")):
        return "url"
    return "function" if text.endswith(".py") else "model"


def has_function_term(terms: Optional[dict[str, RewardTerm]]) -> bool:
    return any(source_kind(t.source) == "function" for t in (terms or {}).values())


def has_model_term(terms: Optional[dict[str, RewardTerm]]) -> bool:
    return any(source_kind(t.source) == "model" for t in (terms or {}).values())


def has_kind_term(terms: Optional[dict[str, RewardTerm]], kind: str, word: str | None = None) -> bool:
    """Whether a SOURCE of `terms` is of `kind` (source_kind), and where `word` is given, is that word."""
    return any(source_kind(t.source) == kind and word in (None, t.source.strip()) for t in (terms or {}).values())


def has_judge_term(terms: Optional[dict[str, RewardTerm]]) -> bool:
    return any(source_kind(t.source) == "judge" for t in (terms or {}).values())
