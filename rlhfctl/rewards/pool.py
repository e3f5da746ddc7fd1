"""FunctionPool: a user's reward_func.py run in worker processes, so a timeout can really stop a call.

A thread cannot be stopped: a CPU-bound verifier stuck in a regex holds the GIL and a `time.sleep(1e9)` never
returns, so a timed-out call in a thread keeps its core (or the caller) forever. Here each call goes to one of
`workers` processes that loaded the file once and
stay alive between calls; a call that passes its timeout has its process killed and a fresh one started in its
place, and the caller gets a RewardFault naming the file, the function and the batch at once. A process that dies
(`os._exit`, a segfault) is replaced the same way. One worker (the default) means one call at a time, so a
function that is not thread-safe never runs twice at once.

Workers are fresh interpreters (`python -c`, as multiprocessing's "spawn" makes them: forking after torch's or Ray's
threads exist is unsafe) talking over a socket pair wrapped in multiprocessing's Connection. Unlike multiprocessing's
spawn they do not re-import the caller's `__main__`, which a user's script without an `if __name__ == "__main__"`
guard (or a Ray driver) cannot afford.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rlhfctl.rewards.base import RewardBatch, RewardSource, check_batch
from rlhfctl.rewards.contract import RewardFault
from rlhfctl.shards import chunks

log = logging.getLogger(__name__)
RECENT_S = 60.0  # a timeout or crash this recent makes health() say "degraded"


def _fault_state(fault: RewardFault) -> dict[str, Any]:
    return {"problem": fault.problem, "kind": fault.kind, "where": fault.where, "index": fault.index,
            "user_traceback": fault.user_traceback}


def _worker_main(fd: int, path: str, function: str, batching: str, options: str = "{}") -> None:
    """A worker process: load the file, say so, then score batches until told to stop or the pipe closes.
    `options` (JSON) are keyword arguments bound to the function (a built-in verifier's settings)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the process group; the parent decides
    conn = Connection(fd)
    from rlhfctl.rewards.function import FunctionReward

    try:
        reward = FunctionReward(path, function=function, batching=batching)
        if kwargs := json.loads(options):
            reward.fn = functools.partial(reward.fn, **kwargs)
    except RewardFault as fault:
        conn.send(("failed", _fault_state(fault)))
        return
    except BaseException as exc:  # noqa: BLE001 - anything at all goes back to the parent as a message
        conn.send(("failed", {"problem": f"loading it failed: {type(exc).__name__}: {exc}", "kind": "import",
                              "where": path}))
        return
    conn.send(("ready", {"is_async": reward.is_async, "positional": reward.positional,
                         "accepts_kwargs": reward.accepts_kwargs, "cacheable": reward.cacheable}))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message is None:
            break
        queries, prompts, labels = message
        try:
            answer: tuple = ("ok", reward.score(queries, prompts, labels))
        except RewardFault as fault:
            answer = ("fault", _fault_state(fault))
        except BaseException as exc:  # noqa: BLE001
            answer = ("fault", {"problem": f"raised {type(exc).__name__}: {exc}", "kind": "raised",
                                "where": reward.where})
        conn.send((*answer, reward.per_sample, sorted(reward.ignored_keys)))
    reward.close()


class _Worker:
    """One worker process and its pipe; `ready()` waits for its load to finish (or fail)."""

    def __init__(self, pool: "FunctionPool") -> None:
        self.pool = pool
        ours, theirs = socket.socketpair()
        code = (f"import sys; from rlhfctl.rewards.pool import _worker_main; "
                f"_worker_main({theirs.fileno()}, *sys.argv[1:])")
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(pool.path), pool.function, pool.batching, json.dumps(pool.options)],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": _pythonpath()},
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.loaded = False
        self.started = time.monotonic()

    def ready(self) -> dict[str, Any]:
        """The worker's report once loaded; RewardFault if loading failed, died or passed the load timeout."""
        timeout = self.pool.load_timeout
        if not self.conn.poll(max(0.0, timeout - (time.monotonic() - self.started))):
            self.kill()
            raise RewardFault(f"loading it took longer than the load timeout of {timeout:g}s (--reward-load-timeout; "
                              "does it hang at import, e.g. waiting for a server?)", kind="import",
                              where=str(self.pool.path))
        try:
            kind, info = self.conn.recv()
        except (EOFError, OSError):
            self.kill()
            raise RewardFault(f"its process exited (code {self.process.poll()}) while loading the file",
                              kind="import", where=str(self.pool.path)) from None
        if kind == "failed":
            self.kill()
            raise RewardFault(info["problem"], kind=info["kind"], where=info["where"],
                              user_traceback=info.get("user_traceback", ""))
        self.loaded = True
        return info

    def call(self, queries: list[str], prompts: list[str], labels: list[str], timeout: float | None) -> tuple:
        """The worker's answer: ("ok" | "fault", value, per_sample, ignored_keys); an empty tuple when the call
        passed `timeout` (the worker is then killed); EOFError or OSError when the process died."""
        if not self.loaded:
            self.ready()
        self.conn.send((queries, prompts, labels))
        if not self.conn.poll(timeout):
            self.kill()
            return ()
        return self.conn.recv()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.conn.close()

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self.conn.send(None)
            self.process.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


def _pythonpath() -> str:
    """The caller's import path for the worker, so it imports the same rlhfctl (a checkout, not only the installed
    package)."""
    here = str(Path(__file__).resolve().parents[2])
    parts = [here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != here]
    return os.pathsep.join(parts)


class FunctionPool(RewardSource):
    """A reward_func.py in `workers` worker processes: `score()` is thread-safe and runs at
    most `workers` calls at once; a call that takes longer than `timeout` seconds (None: no limit) is killed."""

    def __init__(self, path: str | Path, function: str = "reward_func", *, timeout: float | None = None,
                 workers: int = 1, batching: str = "auto", load_timeout: float = 120.0,
                 options: dict[str, Any] | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.path = Path(path)
        self.function = function
        self.timeout = timeout
        self.workers = workers
        self.concurrency = workers  # a server calls it from as many threads as it has processes
        self.batching = batching
        self.load_timeout = load_timeout
        self.options = dict(options or {})  # JSON-able keyword arguments for the function
        self.where = f"{self.path}:{function}"
        self.name = f"reward_func {self.where}"
        self.per_sample: bool | None = {"auto": None, "batch": False, "per-sample": True}.get(batching)
        self.ignored_keys: set[str] = set()
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._busy: dict[int, float] = {}  # id(worker) -> when its call started
        self._incidents: list[float] = []  # times of recent timeouts and crashes
        self._all: list[_Worker] = []
        self._closed = False
        first = self._spawn()
        try:  # load one first: a broken file fails once, with its message, before the others start
            info = first.ready()
        except RewardFault:
            self._all.clear()
            raise
        self.is_async: bool = info["is_async"]
        self.positional: bool = info["positional"]
        self.accepts_kwargs: bool = info["accepts_kwargs"]
        self.cacheable: bool = info["cacheable"]
        self._idle.put(first)
        others = [self._spawn() for _ in range(workers - 1)]
        try:
            for worker in others:
                worker.ready()
                self._idle.put(worker)
        except RewardFault:
            self.close()
            raise

    def _spawn(self) -> _Worker:
        worker = _Worker(self)
        with self._lock:
            self._all.append(worker)
        return worker

    def _replace(self, worker: _Worker) -> _Worker:
        """A fresh process in the place of one that was killed or died; it loads while the caller reports."""
        worker.kill()
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
            self._incidents.append(time.monotonic())
        return self._spawn()

    # ------------------------------------------------------------------------------------------------ scoring
    def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        if (empty := check_batch(queries, prompts, labels)) is not None:
            return empty
        if self._closed:
            raise RewardFault("the reward function's worker processes were stopped", kind="raised",
                              where=self.where)
        worker = self._idle.get()
        if worker.process.poll() is not None:  # it died while idle (killed from outside): not this call's fault
            worker = self._replace(worker)
        key, n = id(worker), len(queries)
        with self._lock:
            self._busy[key] = time.monotonic()
        fault: RewardFault | None = None
        try:
            answer = worker.call(list(queries), list(prompts), list(labels), self.timeout)
            if not answer:
                worker = self._replace(worker)
                fault = RewardFault(
                    f"took longer than the timeout of {self.timeout:g}s on a batch of {n}; its worker process was "
                    "killed and a fresh one started (raise --reward-timeout if this is expected)",
                    kind="timeout", where=self.where, index=0 if n == 1 else None,
                )
        except (EOFError, OSError):
            code = worker.process.wait(5)
            worker = self._replace(worker)
            fault = RewardFault(f"its worker process exited (code {code}) on a batch of {n}; a fresh one was "
                                "started (does the function call os._exit or crash the interpreter?)",
                                kind="crashed", where=self.where, index=0 if n == 1 else None)
        except RewardFault as reload_failed:  # a replacement that could not load the file again
            worker = self._replace(worker)
            fault = reload_failed
        finally:
            with self._lock:
                self._busy.pop(key, None)
            self._idle.put(worker)
        if fault is not None:
            raise fault
        kind, value, per_sample, ignored = answer
        self.per_sample = per_sample
        self.ignored_keys.update(ignored)
        if kind == "ok":
            return value
        raise RewardFault(value["problem"], kind=value["kind"], where=value["where"], index=value["index"],
                          user_traceback=value.get("user_traceback", ""))

    def score_chunks(self, queries: list[str], prompts: list[str], labels: list[str], size: int) -> RewardBatch:
        """Score in chunks of `size` (OpenRLHF calls reward_func per micro-rollout batch), up to `workers` chunks at
        once; a fault's sample index is shifted to its place in the whole batch."""
        bounds = [(s.start, s.stop) for s in chunks(len(queries), size)]
        if len(bounds) <= 1:
            return self.score(queries, prompts, labels)

        def one(a: int, b: int) -> RewardBatch:
            try:
                return self.score(queries[a:b], prompts[a:b], labels[a:b])
            except RewardFault as fault:
                at = f" on the chunk of samples {a}-{b - 1}" if fault.index is None else ""
                raise RewardFault(fault.problem + at, kind=fault.kind, where=fault.where,
                                  index=None if fault.index is None else fault.index + a,
                                  user_traceback=fault.user_traceback) from None

        with ThreadPoolExecutor(min(self.workers, len(bounds)), thread_name_prefix="reward-chunk") as threads:
            futures = [threads.submit(one, a, b) for a, b in bounds]
            return RewardBatch.concat([f.result() for f in futures])  # the first failing chunk's fault, in order

    # ------------------------------------------------------------------------------------------------ health
    def health(self) -> dict[str, Any]:
        """"ok", or "degraded" with the reason: a call running past its timeout, or a timeout or crash in the last
        minute (serve-rm's /health reports it)."""
        now = time.monotonic()
        with self._lock:
            self._incidents = [t for t in self._incidents if now - t < RECENT_S]
            stuck = sum(1 for started in self._busy.values()
                        if self.timeout is not None and now - started > self.timeout + 1.0)
            busy, recent = len(self._busy), len(self._incidents)
        info: dict[str, Any] = {"status": "ok", "workers": self.workers, "busy": busy}
        if stuck or recent:
            info["status"] = "degraded"
            info["reason"] = (f"{stuck} call(s) past the --reward-timeout" if stuck else
                              f"{recent} reward call(s) timed out or crashed their worker in the last {RECENT_S:g}s")
        return info

    def close(self) -> None:
        """Stop every worker process (each finishes the call it is in, up to a few seconds, then is killed)."""
        self._closed = True
        with self._lock:
            workers, self._all = self._all, []
        for worker in workers:
            worker.stop()

    def __enter__(self) -> "FunctionPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        """Ship the settings, not the processes (a Ray worker starts its own)."""
        return {"path": str(self.path), "function": self.function, "timeout": self.timeout, "workers": self.workers,
                "batching": self.batching, "load_timeout": self.load_timeout, "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        path = state.pop("path")
        self.__init__(path, **state)  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"FunctionPool({str(self.path)!r}, function={self.function!r}, workers={self.workers})"
