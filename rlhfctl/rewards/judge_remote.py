"""ChatJudge: an LLM judge behind an OpenAI-compatible /v1/chat/completions URL (`vllm serve`, any such API).

One chat request per query, at most --judge-concurrency in flight and at most --judge-rpm started per minute
(spaced evenly), each sent through RemoteReward's transport: the same timeout, retries on connection errors,
timeouts, 429 and 5xx with backoff, and no retry on a 4xx. logprobs mode asks for one token with `top_logprobs` and
takes the expected score over the score tokens found among them (tokens compared without surrounding spaces);
generate mode parses the reply. A reply with no score (no score token among the top logprobs, no number in the
text) gets --judge-fallback-reward and counts in `judge_unparsed`; a server that returns no logprobs at all is an
error that says to use generate mode.
"""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from rlhfctl.errors import RewardError, UsageError
from rlhfctl.rewards.base import RewardBatch, RewardSource
from rlhfctl.rewards.judge import (UNPARSED, JudgeSettings, Value, batch_of_values, chat_url, expected_score,
                                   judge_inputs)
from rlhfctl.rewards.remote import RemoteReward

if TYPE_CHECKING:
    from rlhfctl.config import AuthArgs, JudgeArgs, RemoteRewardArgs

TOP_LOGPROBS = 20  # OpenAI's API allows at most 20


class RateLimiter:
    """At most `per_minute` starts per minute, spaced evenly (60 / per_minute seconds apart), over all threads."""

    def __init__(self, per_minute: float) -> None:
        self.interval = 60.0 / per_minute
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


class ChatJudge(RewardSource):
    """Rewards from an OpenAI-compatible chat server acting as a judge."""

    cacheable = True  # temperature 0: a query scores the same every time (a reward cache may keep it)

    def __init__(self, url: str, model: str, settings: JudgeSettings, *, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 5, retry_backoff: float = 0.5, concurrency: int = 8,
                 rpm: float | None = None) -> None:
        self.url = chat_url(url)
        self.model = model
        self.settings = settings
        self.concurrency = concurrency
        self.name = f"judge {model} at {self.url} ({settings.mode})"
        if settings.mode == "logprobs" and len(settings.score_tokens) > TOP_LOGPROBS:
            raise UsageError(f"--judge-score-tokens: {len(settings.score_tokens)} tokens, but a chat API returns at "
                             f"most {TOP_LOGPROBS} top logprobs; use fewer or --judge-mode generate")
        self._http = RemoteReward([self.url], api_key=api_key, timeout=timeout, max_retries=max_retries,
                                  retry_backoff=retry_backoff, max_inflight=concurrency)
        self._limiter = RateLimiter(rpm) if rpm else None
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="judge")

    @classmethod
    def from_config(cls, judge: JudgeArgs, remote: RemoteRewardArgs, auth: AuthArgs) -> "ChatJudge":
        """From --judge-url and the judge options, the reward client's timeout and retries, and --api-key."""
        assert judge.judge_url is not None and judge.judge_api_model is not None
        return cls(judge.judge_url, judge.judge_api_model, JudgeSettings.from_config(judge), api_key=auth.api_key,
                   timeout=remote.rm_timeout, max_retries=remote.rm_max_retries,
                   retry_backoff=remote.rm_retry_backoff, concurrency=judge.judge_concurrency, rpm=judge.judge_rpm)

    def score(self, queries: list[str], prompts: list[str] | None = None,
              labels: list[str] | None = None) -> RewardBatch:
        prompts, labels, empty = judge_inputs(queries, prompts, labels)
        if empty is not None:
            return empty
        texts = self.settings.template.render_batch(queries, prompts, labels)
        return batch_of_values(list(self._pool.map(self._ask, texts)))

    def _ask(self, text: str) -> Value:
        body: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": text}],
                                "temperature": 0.0}
        if self.settings.mode == "logprobs":
            body.update(max_tokens=1, logprobs=True, top_logprobs=TOP_LOGPROBS)
        else:
            body["max_tokens"] = self.settings.max_new_tokens
        response = self._http.send(self.url, body, pace=self._limiter.wait if self._limiter else None)
        try:
            choice = response.json()["choices"][0]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError):
            raise RewardError(f"{self.url}: not a chat/completions answer: {response.text[:200]!r}") from None
        if self.settings.mode == "generate":
            content = (choice.get("message") or {}).get("content")
            return self.settings.parsed(content if isinstance(content, str) else "")
        return self._expected(choice)

    def _expected(self, choice: dict[str, Any]) -> Value:
        try:
            top = choice["logprobs"]["content"][0]["top_logprobs"]
        except (KeyError, IndexError, TypeError):
            raise RewardError(f"{self.url}: the answer has no top_logprobs: this server does not offer logprobs for "
                              f"{self.model}; use --judge-mode generate") from None
        mass: dict[str, float] = {}
        for item in top:
            token = str(item.get("token", "")).strip()
            mass[token] = mass.get(token, 0.0) + _exp(item.get("logprob"))
        probabilities = [mass.get(t.text.strip(), 0.0) for t in self.settings.score_tokens]
        if sum(probabilities) <= 0:
            return self.settings.fallback_reward, {UNPARSED: 1.0}
        return expected_score(probabilities, [t.value for t in self.settings.score_tokens]), {UNPARSED: 0.0}

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._http.close()

    def __repr__(self) -> str:
        return f"ChatJudge({self.url!r}, {self.model!r})"


def _exp(logprob: Any) -> float:
    return math.exp(logprob) if isinstance(logprob, (int, float)) and math.isfinite(logprob) else 0.0
