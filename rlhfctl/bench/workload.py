"""What bench-rm sends: requests of --batch-size texts, synthetic (deterministic for --seed) or from --prompt-data.

Bodies are JSON-encoded once, before the clock starts, so the load generator spends its time on traffic rather
than on building it. Lengths are counted in whitespace-separated words (bench-rm has no tokenizer for a --url
target); for English text a word is about one to two tokens.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rlhfctl.errors import ConfigError

if TYPE_CHECKING:
    from rlhfctl.config import BenchArgs, DataArgs, RewardModelArgs, RunArgs

MAX_TEXTS = 4096  # distinct texts prepared at most (~0.2 s); longer runs cycle through them

# A small fixed vocabulary: texts look like prose to a tokenizer and stay identical across runs for one seed.
_WORDS = (
    "the reward model reads a prompt and a response then returns one number that says how good the answer is "
    "policy training needs many such scores per step so the server must batch requests from every worker "
    "while latency stays low and throughput high a question about numbers may have an exact label and a check "
    "compares the final answer with it step by step we add two values subtract another multiply divide and "
    "explain why result correct wrong because therefore first second third finally summary example test data "
    "model layer token length batch queue server client request time second minute fast slow small large"
).split()


@dataclass(frozen=True)
class Request:
    """One /get_reward request: its texts (for an in-process target), JSON body, and size for the figures."""

    queries: list[str]
    prompts: list[str]
    labels: list[str]
    tokens: int
    body: bytes = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.queries)

    @classmethod
    def of(cls, queries: list[str], prompts: list[str], labels: list[str]) -> "Request":
        body = json.dumps({"query": queries, "prompts": prompts, "labels": labels}, ensure_ascii=False).encode()
        return cls(queries, prompts, labels, sum(len(q.split()) for q in queries), body)


@dataclass
class Workload:
    """Prepared requests, cycled through when a run sends more than were prepared."""

    requests: list[Request]
    description: str

    def __getitem__(self, index: int) -> Request:
        return self.requests[index % len(self.requests)]

    def __len__(self) -> int:
        return len(self.requests)


def synthetic_texts(count: int, min_words: int, max_words: int, seed: int) -> list[tuple[str, str]]:
    """`count` (prompt, query) pairs; a query is its prompt (its first third) followed by a response.
    Lengths are uniform in [min_words, max_words]; the same seed gives the same texts."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        words = rng.choices(_WORDS, k=rng.randint(min_words, max_words))
        cut = max(1, len(words) // 3)
        prompt = " ".join(words[:cut])
        pairs.append((prompt, prompt + " " + " ".join(words[cut:]) if len(words) > cut else prompt))
    return pairs


def _data_texts(data: DataArgs, model: RewardModelArgs) -> list[tuple[str, str, str]]:
    """(prompt, query, label) from --prompt-data; a row's prompt is scored as it is (no response is generated)."""
    from rlhfctl.data import load_prompts

    assert data.prompt_data is not None
    tokenizer = None
    if data.apply_chat_template:
        if not model.reward_pretrain:
            raise ConfigError("--apply-chat-template needs --reward-pretrain DIR: its tokenizer formats the prompts")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model.reward_pretrain)
    examples = load_prompts(data.prompt_data, data.input_key, data.label_key, data.apply_chat_template, tokenizer,
                            data.max_samples, split=data.prompt_split)
    return [(e.prompt, e.prompt, e.label) for e in examples]


def build_workload(bench: BenchArgs, data: DataArgs, run: RunArgs, model: RewardModelArgs,
                   num_requests: int) -> Workload:
    """Up to `num_requests` distinct requests of --texts-per-request texts (fewer for huge runs; they cycle)."""
    batch = bench.texts_per_request
    count = max(1, min(num_requests, MAX_TEXTS // batch))
    if data.prompt_data:
        rows = _data_texts(data, model)
        texts = [rows[i % len(rows)] for i in range(count * batch)]
        what = f"{len(rows)} texts from {data.prompt_data} (--input-key {data.input_key})"
    else:
        pairs = synthetic_texts(count * batch, bench.min_tokens, bench.max_tokens, run.seed)
        texts = [(p, q, "") for p, q in pairs]
        what = f"synthetic texts of {bench.min_tokens}-{bench.max_tokens} words (--seed {run.seed})"
    if model.pairwise:  # a pairwise model compares one prompt's responses: a request is a group
        texts = [(g[0], g[0] + q[len(p):], lbl) for i, (p, q, lbl) in enumerate(texts)
                 for g in [texts[i - i % batch]]]
        what += "; each request one prompt's group (--pairwise)"
    requests = []
    for start in range(0, count * batch, batch):
        part = texts[start: start + batch]
        requests.append(Request.of([q for _, q, _ in part], [p for p, _, _ in part], [lbl for _, _, lbl in part]))
    return Workload(requests, f"{batch} text{'s' if batch > 1 else ''} per request; {what}")
