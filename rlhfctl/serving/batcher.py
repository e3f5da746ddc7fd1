"""The scorers behind serve-rm's endpoint: a dynamic batcher for a reward model, a thread pool for anything else.

A reward model does far more work per second on a batch than on one text at a time, and trainers send one text
per request from many workers. So the texts of all clients' requests go into one queue, and a worker thread (off
the event loop, which keeps answering) runs forward passes of texts of similar length under a token budget,
waiting at most `max_wait_ms` for company when fewer than a batch's worth are queued.

A reward function is called once per request instead: it may compute over its batch (group statistics), so
batching requests together could change its results.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import itertools
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Protocol

from rlhfctl.rewards.base import RewardBatch, RewardSource
from rlhfctl.rewards.batched import BatchedSource
from rlhfctl.rewards.judge import batch_of_values

if TYPE_CHECKING:
    from rlhfctl.config import RewardExecArgs, ServerArgs

log = logging.getLogger(__name__)


class BatchObserver(Protocol):
    """Where forward passes are reported: ServerMetrics, or a relay to it from a model worker process."""

    def observe_batch(self, texts: int, padded_tokens: int | None, seconds: float) -> None: ...


class Scorer(Protocol):
    """What the HTTP layer awaits; `start()` (called on the event loop) and `aclose()` bracket the app's life.
    `failure` says why it can score no more (a dead model process), else None."""

    failure: str | None

    async def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch: ...

    def start(self) -> None: ...

    async def aclose(self) -> None: ...


class _Request:
    """One request's texts; `rewards` fill in as the batches holding its texts finish, then `done` gets them (or
    the exception), called on the worker thread."""

    __slots__ = ("texts", "done", "ids", "arrived", "rewards", "remaining")

    def __init__(self, texts: list[str], done: Callable[[Any], None], ids: list[list[int]] | None = None) -> None:
        self.texts = texts
        self.done = done
        self.ids = ids
        self.arrived = time.monotonic()
        self.rewards: list[float] = [0.0] * len(texts)
        self.remaining = len(texts)


class _Text:
    """One tokenised text waiting for a forward pass; `key` (length, arrival number) orders the pending set."""

    __slots__ = ("key", "ids", "request", "index", "taken")

    def __init__(self, key: tuple[int, int], ids: list[int], request: _Request, index: int) -> None:
        self.key, self.ids, self.request, self.index, self.taken = key, ids, request, index, False


class CostModel:
    """forward seconds ~ a + b * padded tokens, kept as `overhead_tokens` = a / b: how many tokens' worth of work
    one forward pass costs before any text. Big for a small model (Python overhead dominates: pad freely to fill
    batches), small for a big one (padding costs real compute: group only near-equal lengths).

    `a` is timed once on a one-token pass; `b` follows the passes actually run (it shifts with shapes, caches and
    attention's quadratic term), as an exponential moving average.
    """

    def __init__(self, overhead_s: float, per_token_s: float) -> None:
        self.overhead_s = overhead_s
        self.per_token_s = per_token_s

    @classmethod
    def calibrate(cls, source: BatchedSource) -> "CostModel":
        eos = source.encode([""])[0]
        probe = (eos * 64)[:64]
        timings = {}
        for name, batch in (("one", [eos]), ("probe", [probe])):
            runs = []
            for _ in range(3):
                started = time.perf_counter()
                source.forward(batch)
                runs.append(time.perf_counter() - started)
            timings[name] = min(runs)
        overhead = timings["one"]
        return cls(overhead, max((timings["probe"] - overhead) / (len(probe) - 1), 1e-9))

    @property
    def overhead_tokens(self) -> float:
        return self.overhead_s / self.per_token_s

    def observe(self, padded_tokens: int, seconds: float) -> None:
        if padded_tokens >= 16:  # tiny passes say little about the per-token cost
            sample = max(seconds - self.overhead_s, 0.0) / padded_tokens
            self.per_token_s += 0.1 * (sample - self.per_token_s)


class DynamicBatcher:
    """Batches the texts of concurrent requests into shared forward passes of a ModelReward.

    The waiting texts, in length order, are cut into passes of at most `batch_size` texts and `max_batch_tokens`
    padded tokens; a pass also ends where the next text would add more padding than half the cost of one pass
    (CostModel), so a pass costs less per text than scoring its texts one by one, and texts over LONG times that
    cost share passes only with texts of their own length. The pass run next is the one holding the oldest waiting
    text: nothing starves, and requests finish roughly in arrival order.
    """

    failure = None  # a pass that raises fails the requests in it; the next pass goes on
    PAD_SHARE = 0.5
    LONG = 4  # texts longer than LONG x the overhead (in tokens) are not padded

    def __init__(self, source: BatchedSource, metrics: "BatchObserver", *, max_wait_ms: float,
                 after_step: Callable[[], None] | None = None) -> None:
        self.source = source
        self.after_step = after_step  # called after each round of work (a model worker flushes its answers)
        self.metrics = metrics
        self.batch_size = source.batch_size
        self.max_batch_tokens = source.max_batch_tokens
        self.max_wait = max_wait_ms / 1000.0
        self.cost: CostModel | None = None
        self._incoming: list[_Request] = []  # guarded by _cond; the rest is the worker thread's alone
        self._incoming_texts = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._by_length: list[tuple[int, int, _Text]] = []
        self._oldest: deque[_Text] = deque()
        self._arrivals = itertools.count()
        self._live: dict[int, _Request] = {}  # admitted and not answered yet

    def submit(self, texts: list[str], done: Callable[[Any], None], ids: list[list[int]] | None = None) -> None:
        """Queue texts from any thread; `done(rewards or exception)` is called on the worker thread. `ids`, if
        given, are the texts already tokenised (source.encode) by the caller's thread."""
        with self._cond:
            self._incoming.append(_Request(texts, done, ids))
            self._incoming_texts += len(texts)
            self._cond.notify()

    async def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        texts = self.source.render(queries, prompts, labels)
        self.submit(texts, functools.partial(loop.call_soon_threadsafe, _settle, future))
        return batch_of_values(await future)

    def start(self) -> None:
        if self.cost is None:
            self.cost = CostModel.calibrate(self.source)
            log.info("batching: one pass costs as much as %.0f tokens; batch size %d, token budget %d",
                     self.cost.overhead_tokens, self.batch_size, self.max_batch_tokens)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="reward-batcher", daemon=True)
        self._thread.start()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.stop)

    def stop(self) -> None:
        """Score what is still queued, then end the worker thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # ------------------------------------------------------------------------------------------------ worker
    def _run(self) -> None:
        while True:
            arrived = self._collect()
            if arrived is None:
                return
            try:
                self._admit(arrived)
                if self._by_length:
                    self._run_batch(self._next_batch())
            except BaseException as exc:  # never let the worker die: the requests it holds get the error
                log.exception("reward batcher failed")
                self._fail_all(exc)
            if self.after_step is not None:
                self.after_step()

    def _collect(self) -> list[_Request] | None:
        """New requests (None: stopped and nothing left). From idle, a first arrival waits up to max_wait for a
        batch's worth of company; texts left over from the last pass have waited through it already, so they go
        at once with whatever has arrived."""
        with self._cond:
            while not self._incoming and not self._by_length and not self._stopping:
                self._cond.wait()
            if not self._incoming and not self._by_length:
                return None
            deadline = self._incoming[0].arrived + self.max_wait if not self._by_length else 0.0
            while self._incoming_texts < self.batch_size and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            arrived, self._incoming, self._incoming_texts = self._incoming, [], 0
            return arrived

    def _admit(self, requests: list[_Request]) -> None:
        """Tokenise new texts (together; one by one if that fails, so a bad request fails alone) and queue them."""
        fresh = [r for r in requests if r.ids is None]
        if fresh:
            try:
                rows = self.source.encode([t for r in fresh for t in r.texts])
                for request, ids in zip(fresh, _split(rows, fresh)):
                    request.ids = ids
            except Exception:
                for request in fresh:
                    try:
                        request.ids = self.source.encode(request.texts)
                    except Exception as exc:
                        _deliver([(request, exc)])
        for request in requests:
            if request.ids is None:
                continue
            self._live[id(request)] = request
            for index, ids in enumerate(request.ids):
                text = _Text((len(ids), next(self._arrivals)), ids, request, index)
                bisect.insort(self._by_length, (*text.key, text))
                self._oldest.append(text)
            request.ids = None  # the texts hold their rows now

    def _next_batch(self) -> list[_Text]:
        """The pass holding the oldest waiting text, from a partition of the waiting texts in length order."""
        while self._oldest[0].taken:
            self._oldest.popleft()
        items = self._by_length
        head = bisect.bisect_left(items, self._oldest[0].key)
        overhead = self.cost.overhead_tokens if self.cost else float("inf")
        start = 0
        for end in range(1, len(items) + 1):
            if end == len(items) or self._closes(items[end - 1][0], items[end][0], end - start, overhead):
                if end > head:
                    break
                start = end
        batch = [entry[2] for entry in items[start:end]]
        del items[start:end]
        for text in batch:
            text.taken = True
        return batch

    def _closes(self, width: int, following: int, n: int, overhead: float) -> bool:
        """Whether a pass of n texts up to `width` tokens long ends before the next text (`following` tokens);
        `overhead` is the cost of a pass in tokens (CostModel.overhead_tokens)."""
        if n >= self.batch_size or following * (n + 1) > self.max_batch_tokens:
            return True
        if following == width:
            return False
        if following > self.LONG * overhead:
            # A long text's pass costs little beyond its tokens, so sharing it saves little, and padding also
            # costs the masked attention path (3-5% slower at 256-512 tokens on CPU): equal lengths only.
            return True
        return (following - width) * n > self.PAD_SHARE * overhead

    def _run_batch(self, batch: list[_Text]) -> None:
        batch = [text for text in batch if text.request.remaining > 0]  # a request that failed needs no more
        if not batch:
            return
        rows = [text.ids for text in batch]
        padded = len(rows) * max(len(r) for r in rows)
        started = time.perf_counter()
        try:
            values = self.source.forward(rows)
        except Exception as exc:
            log.exception("reward model forward failed on a batch of %d", len(rows))
            failed = {id(t.request): t.request for t in batch}
            self._answer([(r, exc) for r in failed.values()])
            return
        seconds = time.perf_counter() - started
        if self.cost is not None:
            self.cost.observe(padded, seconds)
        self.metrics.observe_batch(len(rows), padded, seconds)
        done = []
        for text, value in zip(batch, values):
            request = text.request
            request.rewards[text.index] = value
            request.remaining -= 1
            if request.remaining == 0:
                done.append((request, request.rewards))
        self._answer(done)

    def _answer(self, results: list[tuple[_Request, Any]]) -> None:
        for request, _ in results:
            request.remaining = 0
            self._live.pop(id(request), None)
        _deliver(results)

    def _fail_all(self, exc: BaseException) -> None:
        """After a bug in the worker: every request it holds gets the error, and the queue starts afresh."""
        self._by_length, self._oldest = [], deque()
        self._answer([(r, exc) for r in list(self._live.values())])


def _split(rows: list[list[int]], requests: list[_Request]) -> list[list[list[int]]]:
    """Token rows of all requests' texts, back into one list per request."""
    out, start = [], 0
    for request in requests:
        out.append(rows[start: start + len(request.texts)])
        start += len(request.texts)
    return out


def _deliver(results: list[tuple[_Request, Any]]) -> None:
    for request, value in results:
        try:
            request.done(value)
        except Exception:  # nobody is waiting any more (a closed event loop, a closed pipe): not the worker's problem
            log.debug("could not deliver a result", exc_info=True)


def _settle(future: asyncio.Future, value: Any) -> None:
    if future.done():  # the client went away and the handler was cancelled
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)


class ThreadedScorer:
    """Calls any RewardSource (a reward_func.py's FunctionPool, a proxy to another server) once per request, from
    `workers` threads: as many calls at once as the pool has worker processes (--reward-workers), no more."""

    failure = None  # the source's own errors answer each request; the scorer itself never breaks

    def __init__(self, source: RewardSource, metrics: BatchObserver, *, workers: int = 1) -> None:
        self.source = source
        self.metrics = metrics
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None

    async def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        assert self._pool is not None, "start() the scorer first"
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, queries, prompts, labels)

    def _call(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        started = time.perf_counter()
        batch = self.source.score(queries, prompts, labels)
        self.metrics.observe_batch(len(queries), None, time.perf_counter() - started)
        return batch

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="reward-func")

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    async def aclose(self) -> None:
        await asyncio.to_thread(self.stop)


def make_scorer(source: RewardSource, metrics: BatchObserver, server: ServerArgs,
                exec_args: RewardExecArgs) -> DynamicBatcher | ThreadedScorer:
    """The scorer of an in-process source: a reward model (ModelReward) is batched across requests on a worker
    thread; any other source is called once per request. Sync `start()`/`stop()` (or `aclose()` in an app)."""
    if isinstance(source, BatchedSource):
        return DynamicBatcher(source, metrics, max_wait_ms=server.max_wait_ms)
    # A judge behind a chat URL takes --judge-concurrency requests at once; a reward_func.py --reward-workers.
    return ThreadedScorer(source, metrics, workers=source.concurrency or exec_args.reward_workers)
