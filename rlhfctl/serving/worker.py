"""A reward model (or an LLM judge) in a worker process of its own: how serve-rm runs --reward-pretrain and
--judge-model.

CPython runs one thread at a time per process. In the server's own process, a reward model takes turns with the
event loop that parses requests, and for a small model (whose forward pass is mostly Python) that turn-taking,
not the model, sets the pace. In a worker process the model has an interpreter and a core to itself while the
server's process answers HTTP on another. The worker runs the same DynamicBatcher as the in-process path; texts,
rewards and the figures for /metrics cross a pipe. The server's process never imports torch.

The worker ignores SIGINT/SIGTERM (a Ctrl-C reaches the whole process group): it stops when the server asks,
after scoring what is queued, or when the server's end of the pipe closes.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import multiprocessing
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from rlhfctl.errors import RlhfctlError, UsageError
from rlhfctl.rewards.base import RewardBatch
from rlhfctl.rewards.judge import batch_of_values

if TYPE_CHECKING:
    from rlhfctl.config.slices import ServedModelGroups

log = logging.getLogger("rlhfctl.serve")


class ModelProcess:
    """The Scorer for a reward model loaded from `served` (--reward-pretrain and the model and batching options) in a
    worker process. `launch()` loads it (blocking; errors come back as the worker raised them); the app's
    lifespan then `start()`s it on the event loop. It answers /health's questions as a RewardSource does."""

    cacheable = True  # a reward model or a greedy judge, text by text (serve-rm scores a pairwise one in-process)

    def __init__(self, served: ServedModelGroups) -> None:
        self.served = served
        self.name = served.name
        self.metrics: Any = None  # ServerMetrics, set by the app
        self.info: dict[str, Any] = {}
        self.failure: str | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._futures: dict[int, asyncio.Future] = {}
        self._ids = itertools.count()

    def health(self) -> dict[str, Any]:
        """Nothing to add to /health: a dead worker is the scorer's `failure`."""
        return {}

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def launch(self) -> dict[str, Any]:
        """Start the worker and wait until its model is loaded; return what it reports (threads, batching)."""
        if self._process is not None:
            return self.info
        context = multiprocessing.get_context("spawn")  # never fork a process that may hold threads
        ours, theirs = context.Pipe()
        self._process = context.Process(target=_worker_main, args=(theirs, self.served), name="rlhfctl-reward-model",
                                        daemon=True)
        self._process.start()
        theirs.close()
        while not ours.poll(0.1):
            if not self._process.is_alive():
                raise RlhfctlError(f"the reward model process exited (code {self._process.exitcode}) while loading")
        try:
            message = ours.recv()
        except EOFError:
            self._process.join(5)
            raise RlhfctlError(f"the reward model process exited (code {self._process.exitcode}) while loading") \
                from None
        if message[0] == "failed":
            self._process.join(5)
            raise (UsageError if message[2] == UsageError.exit_code else RlhfctlError)(message[1])
        self.info, self._conn = message[1], ours
        return self.info

    # ------------------------------------------------------------------------------------------------ Scorer
    def start(self) -> None:
        self.launch()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._conn.fileno(), self._on_readable)

    async def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        if self.failure:
            raise RuntimeError(self.failure)
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._futures[request_id] = future
        try:
            # Only a judge's template reads prompts and labels: a reward model's requests stay as small as before.
            self._conn.send((request_id, queries, prompts, labels) if self.served.judge_model
                            else (request_id, queries))
            return batch_of_values(await future)
        except OSError:
            self._died()
            raise RuntimeError(self.failure) from None
        finally:
            self._futures.pop(request_id, None)

    async def aclose(self) -> None:
        """Stop the worker after it has scored what is queued (the server has answered its requests by now)."""
        if self._loop is not None and self._conn is not None and not self.failure:
            self._loop.remove_reader(self._conn.fileno())
        await asyncio.to_thread(self._stop_worker)

    def close(self) -> None:
        """Make sure the worker is gone (after aclose, or when the server never started)."""
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join(5)

    # ------------------------------------------------------------------------------------------------ pipe
    def _on_readable(self) -> None:
        try:
            while self._conn.poll():
                self._handle(self._conn.recv())
        except (EOFError, OSError):
            self._died()

    def _handle(self, message: tuple) -> None:
        if message[0] != "out":  # "stopped"
            return
        for item in message[1]:
            if item[0] == "batch":
                if self.metrics is not None:
                    self.metrics.observe_batch(*item[1:])
                continue
            request_id, rewards, error = item
            future = self._futures.get(request_id)
            if future is None or future.done():
                continue
            if error is None:
                future.set_result(rewards)
            else:
                future.set_exception(RuntimeError(error))

    def _died(self) -> None:
        if self.failure:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._conn.fileno())
        self._process.join(1)
        self.failure = (f"the reward model process exited (exit code {self._process.exitcode}); "
                        "restart serve-rm (see its log for the cause)")
        log.error(self.failure)
        for future in self._futures.values():
            if not future.done():
                future.set_exception(RuntimeError(self.failure))

    def _stop_worker(self, timeout: float = 60.0) -> None:
        if self._process is None or self._conn is None:
            return
        try:
            self._conn.send(None)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._conn.poll(max(0.0, deadline - time.monotonic())):
                message = self._conn.recv()
                if message[0] == "stopped":
                    break
                self._handle(message)
        except (EOFError, OSError):
            pass
        self._process.join(10)
        self.close()


# ---------------------------------------------------------------------------------------------------- worker
class _Outbox:
    """Answers and pass figures, gathered and sent to the server's process in one message per round of work:
    a pipe write that wakes the other process costs about as much as a small forward pass."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.items: list[tuple] = []
        self.lock = threading.Lock()

    def observe_batch(self, texts: int, padded_tokens: int | None, seconds: float) -> None:
        with self.lock:
            self.items.append(("batch", texts, padded_tokens, seconds))

    def reply(self, request_id: int, value: Any) -> None:
        item = ((request_id, None, f"{type(value).__name__}: {value}") if isinstance(value, BaseException)
                else (request_id, value, None))
        with self.lock:
            self.items.append(item)

    def flush(self) -> None:
        with self.lock:
            items, self.items = self.items, []
            if items:
                self.conn.send(("out", items))

    def send(self, message: tuple) -> None:
        with self.lock:
            self.conn.send(message)


def _worker_main(conn: Any, served: ServedModelGroups) -> None:
    """Load the model, then tokenise and queue every (request id, texts) received until told to stop (None) or
    orphaned. Tokenising happens here, on the receiving thread, beside the forward passes of the batcher's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from rlhfctl.rewards.batched import BatchedSource
    from rlhfctl.serving.batcher import DynamicBatcher
    from rlhfctl.serving.sources import open_model
    from rlhfctl.serving.threads import configure_threads

    threads = configure_threads(served.server.num_threads)
    try:
        source = open_model(served)
        assert isinstance(source, BatchedSource), "a pairwise model is served in the server's process"
    except RlhfctlError as exc:
        conn.send(("failed", str(exc), exc.exit_code))
        return
    except Exception as exc:  # a broken folder can fail deep inside transformers: report it, not a traceback
        conn.send(("failed", f"{served.flag}: {type(exc).__name__}: {exc}", 1))
        return
    outbox = _Outbox(conn)
    batcher = DynamicBatcher(source, outbox, max_wait_ms=served.server.max_wait_ms, after_step=outbox.flush)
    batcher.start()
    outbox.send(("ready", {"name": source.name, "torch_threads": threads, "batch_size": source.batch_size,
                           "max_batch_tokens": source.max_batch_tokens,
                           "overhead_tokens": round(batcher.cost.overhead_tokens, 1) if batcher.cost else None}))
    try:
        while True:
            message = conn.recv()
            if message is None:
                break
            request_id, queries, *context = message  # (prompts, labels) for a judge
            done = functools.partial(outbox.reply, request_id)
            try:
                texts = source.render(queries, *context) if context else queries
                ids = source.encode(texts)
            except Exception as exc:
                done(exc)
                outbox.flush()
                continue
            batcher.submit(texts, done, ids)
    except (EOFError, OSError):
        pass  # the server is gone: finish what is queued and leave
    finally:
        batcher.stop()
        try:
            outbox.flush()
            outbox.send(("stopped",))
        except OSError:
            pass
