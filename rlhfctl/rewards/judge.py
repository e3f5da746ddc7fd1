"""What every LLM judge shares, local (rewards/judge_model.py) or behind a chat URL (rewards/judge_remote.py): the prompt
template, the score tokens, the number parser, and the prompt/response split of a query.

No torch here: serve-rm's server process and config validation import it.

- The template is Jinja with three variables, `prompt`, `response` and `label` (empty strings where the caller
  has none). A template that uses another variable, or never shows the response, is refused at start.
- `logprobs` mode reads the judge's next-token distribution over the score tokens, renormalised over them, and
  returns the expected value: a number for every query, never a parse failure.
- `generate` mode parses the first match of a regex in the generated text; text with no number gets the stated
  fallback reward and is counted (`judge_unparsed` in extra_logs and /metrics), never a crash.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from rlhfctl.errors import UsageError
from rlhfctl.rewards.base import RewardBatch, check_batch

if TYPE_CHECKING:
    from rlhfctl.config import JudgeArgs

TEMPLATE_VARIABLES = ("prompt", "response", "label")
Value = float | tuple[float, dict[str, float]]  # what a judge pass gives per text: a reward, or one with extras
UNPARSED = "judge_unparsed"  # extra_logs key: 1.0 where generate mode found no number and gave the fallback

DEFAULT_TEMPLATE = """\
You are grading an assistant's answer. Rate how correct and helpful the response is, from 0 (wrong or \
useless) to 9 (correct and complete).
{% if label %}A reference answer: {{ label }}
{% endif %}
Question:
{{ prompt }}

Response:
{{ response }}

Reply with one digit. Score:"""

DEFAULT_SCORE_TOKENS = "0,1,2,3,4,5,6,7,8,9"
DEFAULT_SCORE_REGEX = r"-?\d+(?:\.\d+)?"


@dataclass(frozen=True)
class ScoreToken:
    """A token the judge may answer with, and the score it stands for."""

    text: str
    value: float


def parse_score_tokens(spec: str) -> list[ScoreToken]:
    """'0,1,...,9' (each token its number) or 'No=0,Yes=1' (TOKEN=VALUE). At least two distinct tokens."""
    tokens = []
    for part in (p for p in spec.split(",") if p != ""):
        text, sep, raw = part.rpartition("=") if "=" in part else (part, "", part)
        text = text if sep else part
        try:
            value = float(raw)
        except ValueError:
            raise UsageError(f"--judge-score-tokens: {part!r} has no score: write TOKEN=VALUE (No=0,Yes=1) or a "
                             "number token (0,1,...,9)") from None
        if not text.strip() or not math.isfinite(value):
            raise UsageError(f"--judge-score-tokens: {part!r} is not TOKEN=VALUE with a finite VALUE")
        tokens.append(ScoreToken(text, value))
    if len({t.text for t in tokens}) != len(tokens) or len(tokens) < 2:
        raise UsageError(f"--judge-score-tokens {spec!r}: give at least two different tokens, e.g. 0,1,...,9 or "
                         "No=0,Yes=1")
    return tokens


def expected_score(probabilities: Sequence[float], values: Sequence[float]) -> float:
    """The mean of `values` under `probabilities` renormalised to sum to 1 (NaN if they sum to 0)."""
    total = sum(probabilities)
    return sum(p * v for p, v in zip(probabilities, values)) / total if total > 0 else math.nan


def compile_regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"--judge-score-regex {pattern!r} is not a valid regular expression: {exc}") from None


def parse_number(text: str, regex: re.Pattern[str]) -> float | None:
    """The first match of `regex` in `text` (its first group if it has one) as a finite number, else None."""
    match = regex.search(text)
    if match is None:
        return None
    try:
        value = float(match.group(1) if regex.groups else match.group(0))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def chat_url(url: str) -> str:
    """The chat/completions endpoint of --judge-url: http://HOST:PORT, .../v1, or the full endpoint."""
    from urllib.parse import urlsplit

    raw = url.strip().rstrip("/")
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--judge-url {url!r} is not an http(s) URL (expected http://HOST:PORT/v1)")
    if parts.path == "":
        return raw + "/v1/chat/completions"
    if parts.path.endswith("/v1"):
        return raw + "/chat/completions"
    if parts.path.endswith("/chat/completions"):
        return raw
    raise UsageError(f"--judge-url {url!r}: expected http://HOST:PORT, http://HOST:PORT/v1 or "
                     ".../v1/chat/completions (an OpenAI-compatible server), not the path {parts.path!r}")


def split_query(query: str, prompt: str) -> str:
    """The response part of a query: what follows the prompt when the query starts with it (train-ppo's and
    OpenRLHF's queries are prompt + response), else the whole query (a client that sent no prompts)."""
    return query[len(prompt):] if prompt and query.startswith(prompt) else query


class JudgeTemplate:
    """A Jinja template of (prompt, response, label), checked at load for the variables it uses."""

    def __init__(self, source: str, where: str = "the default judge template") -> None:
        import jinja2
        from jinja2 import meta
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
        try:
            used = meta.find_undeclared_variables(env.parse(source))
            self._template = env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise UsageError(f"{where}: Jinja syntax error on line {exc.lineno}: {exc.message}") from None
        unknown = sorted(used - set(TEMPLATE_VARIABLES))
        if unknown:
            raise UsageError(f"{where}: unknown template variable{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(unknown)}; a judge template may use {', '.join(TEMPLATE_VARIABLES)}")
        if "response" not in used:
            raise UsageError(f"{where}: the template never shows {{{{ response }}}}, so the judge could not see what "
                             "it grades")
        self.where = where
        self.variables = used

    @classmethod
    def load(cls, path: str | None) -> "JudgeTemplate":
        """The template in `path` (--judge-template), or the default one shipped with rlhfctl."""
        if path is None:
            return cls(DEFAULT_TEMPLATE)
        file = Path(path).expanduser()
        if not file.is_file():
            raise UsageError(f"--judge-template {path}: no such file")
        try:
            return cls(file.read_text(), where=f"--judge-template {path}")
        except UnicodeDecodeError:
            raise UsageError(f"--judge-template {path}: not a UTF-8 text file") from None

    def render(self, prompt: str, response: str, label: str) -> str:
        return self._template.render(prompt=prompt, response=response, label=label)

    def render_batch(self, queries: Sequence[str], prompts: Sequence[str], labels: Sequence[str]) -> list[str]:
        """One judge prompt per query (prompts and labels as /get_reward carries them: empty strings if absent)."""
        return [self.render(p, split_query(q, p), lab) for q, p, lab in zip(queries, prompts, labels)]


def score_token_ids(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """The vocabulary id of each score token; a UsageError when one is several tokens or unknown to the judge."""
    ids = []
    for text in texts:
        pieces = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            shown = tokenizer.convert_ids_to_tokens(pieces)
            raise UsageError(f"--judge-score-tokens: {text!r} is {len(pieces)} tokens of the judge's vocabulary "
                             f"({shown}), not one: pick answers that are single tokens")
        if tokenizer.unk_token_id is not None and pieces[0] == tokenizer.unk_token_id:
            raise UsageError(f"--judge-score-tokens: {text!r} is not in the judge's vocabulary (it encodes as "
                             f"{tokenizer.unk_token!r})")
        ids.append(pieces[0])
    return ids


class JudgePrompts:
    """The token ids a judge reads for each query, the same on every backend (transformers or vLLM): the template,
    then the tokenizer's chat template if asked, cut from the left to `max_len` (the end asks for the score)."""

    def __init__(self, tokenizer: Any, template: JudgeTemplate, *, chat: bool, max_len: int) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.chat = chat
        self.max_len = max_len
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    def render(self, queries: Sequence[str], prompts: Sequence[str], labels: Sequence[str]) -> list[str]:
        """The judge prompt of each query: the template, then the chat template if asked."""
        texts = self.template.render_batch(queries, prompts, labels)
        if not self.chat:
            return texts
        return [self.tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                                   add_generation_prompt=True) for t in texts]

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of rendered judge prompts. A chat-rendered text carries its own special tokens; a plain one
        gets the tokenizer's usual ones."""
        if not texts:
            return []
        ids = self.tokenizer(list(texts), add_special_tokens=not self.chat)["input_ids"]
        return [row[-self.max_len:] or [self.pad_id] for row in ids]


@dataclass(frozen=True)
class JudgeSettings:
    """The judge options of a command's config (JudgeArgs), checked and compiled once."""

    template: JudgeTemplate
    mode: str
    score_tokens: list[ScoreToken]
    regex: re.Pattern[str]
    max_new_tokens: int
    fallback_reward: float

    @classmethod
    def from_config(cls, judge: JudgeArgs) -> "JudgeSettings":
        return cls(template=JudgeTemplate.load(judge.judge_template), mode=judge.judge_mode,
                   score_tokens=parse_score_tokens(judge.judge_score_tokens),
                   regex=compile_regex(judge.judge_score_regex), max_new_tokens=judge.judge_max_new_tokens,
                   fallback_reward=judge.judge_fallback_reward)

    def parsed(self, text: str) -> tuple[float, dict[str, float]]:
        """A generate-mode answer: (reward, extra) with the fallback and `judge_unparsed` 1 when no number."""
        value = parse_number(text, self.regex)
        return (self.fallback_reward, {UNPARSED: 1.0}) if value is None else (value, {UNPARSED: 0.0})


def batch_of_values(values: Sequence[Value]) -> RewardBatch:
    """A RewardBatch from forward values: floats, or (reward, extra) pairs whose extras become extra_logs."""
    rewards = [v[0] if isinstance(v, tuple) else v for v in values]
    keys = sorted({k for v in values if isinstance(v, tuple) for k in v[1]})
    extra = {k: [v[1].get(k, 0.0) if isinstance(v, tuple) else 0.0 for v in values] for k in keys}
    return RewardBatch(rewards=rewards, extra_logs=extra)


def judge_inputs(queries: list[str], prompts: list[str] | None,
                 labels: list[str] | None) -> tuple[list[str], list[str], RewardBatch | None]:
    """The prompts and labels for `queries` of a judge or a batched model (empty where the caller sent none), and
    the answer to give at once when the batch is empty or malformed (check_batch), else None."""
    prompts = [""] * len(queries) if prompts is None else list(prompts)
    labels = [""] * len(queries) if labels is None else list(labels)
    return prompts, labels, check_batch(queries, prompts, labels)
