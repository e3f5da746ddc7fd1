"""FunctionReward: a user's `reward_func.py`, loaded by path and called as OpenRLHF calls it.

OpenRLHF imports the file and calls `reward_func(queries, prompts, labels)` positionally on chunks of
`--micro-rollout-batch-size` queries; it may be sync or async and returns a tensor or a dict (rewards/contract.py).
Everything that can go wrong (file, syntax, import, missing function, signature, exception, timeout, contract) is a
RewardFault naming the file, the function and, where there is one, the sample, with the user's own traceback.

OpenRLHF v0.11 calls reward_func once per sample (lists of one; users index queries[0] and return a scalar),
earlier versions on a batch: `batching` says which ("auto" finds out on the first call of two or more samples).
This class runs the function in the calling process; rewards/pool.py runs it in worker processes that a timeout
can kill, which is how the commands run it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import importlib.util
import inspect
import logging
import numbers
import sys
import threading
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from rlhfctl.rewards.base import RewardBatch, RewardSource, check_batch
from rlhfctl.rewards.contract import DICT_KEYS, RewardFault, to_reward_batch

ARGS = ("queries", "prompts", "labels")
BATCHING = ("auto", "batch", "per-sample")
log = logging.getLogger(__name__)


class FunctionReward(RewardSource):
    """A reward source backed by a Python function in a file.

    `timeout` bounds one call in seconds (None: no bound). An async function runs on this object's own event loop
    in a background thread, so score() works the same from the main thread, a worker thread or code that is
    already inside a running event loop, and clients the function keeps between calls stay on one loop.
    A sync function that overruns its timeout cannot be killed: it is left to finish in a daemon thread.
    """

    def __init__(self, path: str | Path, function: str = "reward_func", timeout: float | None = None,
                 batching: str = "auto") -> None:
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {', '.join(BATCHING)}, not {batching!r}")
        self.path = Path(path)
        self.function = function
        self.timeout = timeout
        self.batching = batching
        self.per_sample: bool | None = {"auto": None, "batch": False, "per-sample": True}[batching]
        self.ignored_keys: set[str] = set()  # dict keys the function returned that OpenRLHF ignores too
        self.where = f"{self.path}:{function}"
        self.name = f"reward_func {self.where}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.module = load_module(self.path)
        self.fn = find_function(self.module, self.path, function)
        self.is_async = _is_async(self.fn)
        self.positional, self.accepts_kwargs = check_signature(self.fn, self.where)
        # Per-sample and repeatable unless the file says `DETERMINISTIC = False` (check-reward tests the claim):
        # only then may its rewards be cached (rewards/cache.py).
        self.cacheable = bool(getattr(self.module, "DETERMINISTIC", True))

    # ------------------------------------------------------------------------------------------------ scoring
    def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        """Call the function on one batch and check what it returns; any failure raises RewardFault."""
        if (empty := check_batch(queries, prompts, labels)) is not None:
            return empty
        if self.per_sample:
            return self._score_per_sample(queries, prompts, labels)
        try:
            value = self.call(list(queries), list(prompts), list(labels))
        except RewardFault as fault:
            if fault.kind != "raised" or len(queries) == 1:
                raise
            raise self._locate(fault, queries, prompts, labels) from None
        n = len(queries)
        if n == 1:
            return self._checked(_one_sample(value) if self.per_sample is not False else value, 1)
        if self.per_sample is None and _is_scalar(_rewards_of(value)):
            # auto: a scalar for a batch is a v0.11-style function that answered for queries[0] only
            try:
                batch = self._score_per_sample(queries, prompts, labels)
            except RewardFault as fault:
                if fault.kind not in ("length", "shape", "type"):
                    raise
            else:
                log.info("%s returned one value for a batch of %d: calling it once per sample, as OpenRLHF v0.11 "
                         "does (--reward-func-batching per-sample says so up front)", self.where, n)
                self.per_sample = True
                return batch
        try:
            batch = self._checked(value, n)
        except RewardFault as fault:
            rewards = _rewards_of(value)
            if fault.kind == "length" and (_is_scalar(rewards) or (isinstance(rewards, (list, tuple))
                                                                  and len(rewards) == 1)):
                raise RewardFault(f"{fault.problem} (a function that scores one sample per call, as OpenRLHF "
                                  "v0.11 calls it, needs --reward-func-batching per-sample)", kind=fault.kind,
                                  where=fault.where, index=fault.index) from None
            raise
        if self.per_sample is None:
            self.per_sample = False
        return batch

    def _score_per_sample(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        """One call per sample, as OpenRLHF v0.11 makes them; a failure names its sample."""
        parts = []
        for i, (query, prompt, label) in enumerate(zip(queries, prompts, labels)):
            try:
                parts.append(self._checked(_one_sample(self.call([query], [prompt], [label])), 1))
            except RewardFault as fault:
                raise RewardFault(fault.problem, kind=fault.kind, where=fault.where, index=i,
                                  user_traceback=fault.user_traceback) from None
        return RewardBatch.concat(parts)

    def _checked(self, value: Any, n: int) -> RewardBatch:
        """The contract check; dict keys OpenRLHF does not read are ignored, as OpenRLHF ignores them (logged once
        and kept in `ignored_keys`, which check-reward reports)."""
        if isinstance(value, dict):
            extra = {str(k) for k in value} - set(DICT_KEYS) - self.ignored_keys
            if extra and "rewards" in value:
                self.ignored_keys |= extra
                log.warning("%s returned dict keys OpenRLHF ignores: %s (only 'rewards', 'scores' and 'extra_logs' "
                            "are read)", self.where, ", ".join(sorted(map(repr, extra))))
        return to_reward_batch(value, n, where=self.where, allow_extra_keys=True)

    def _locate(self, fault: RewardFault, queries: list[str], prompts: list[str], labels: list[str]) -> RewardFault:
        """The batch raised: call the samples one at a time (only on this failure path) to name the first that
        raises on its own, with its own traceback; if none does, the failure depends on the batch as a whole."""
        for i, (query, prompt, label) in enumerate(zip(queries, prompts, labels)):
            try:
                self.call([query], [prompt], [label])
            except RewardFault as single:
                if single.kind != "raised":
                    break
                return RewardFault(single.problem, kind="raised", where=self.where, index=i,
                                   user_traceback=single.user_traceback)
        return RewardFault(f"{fault.problem} on a batch of {len(queries)}, though no sample raises alone",
                           kind="raised", where=self.where, user_traceback=fault.user_traceback)

    def call(self, queries: list[str], prompts: list[str], labels: list[str]) -> Any:
        """The function's raw return value for one batch (awaited if async), within the timeout."""
        if self.is_async:
            return self._call_async(queries, prompts, labels)
        if self.timeout is None:
            return self._invoke(queries, prompts, labels)
        return self._call_in_thread(queries, prompts, labels)

    def _apply(self, queries: list[str], prompts: list[str], labels: list[str]) -> Any:
        """OpenRLHF's positional call; by keyword for a function that only takes keywords (`**kwargs`)."""
        if self.positional:
            return self.fn(queries, prompts, labels)
        return self.fn(queries=queries, prompts=prompts, labels=labels)

    def _invoke(self, queries: list[str], prompts: list[str], labels: list[str]) -> Any:
        try:
            result = self._apply(queries, prompts, labels)
        except (Exception, SystemExit) as exc:
            raise self._raised(exc) from None
        if inspect.isawaitable(result):  # a sync wrapper (functools.partial, a decorator) around a coroutine
            return self._await_elsewhere(result)
        return result

    def _call_in_thread(self, queries: list[str], prompts: list[str], labels: list[str]) -> Any:
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = self._invoke(queries, prompts, labels)
            except BaseException as exc:  # delivered to the caller below
                box["error"] = exc

        worker = threading.Thread(target=target, name=f"reward-func-{self.function}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            raise self._timed_out(len(queries))
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _call_async(self, queries: list[str], prompts: list[str], labels: list[str]) -> Any:
        async def invoke() -> Any:
            return await self._apply(queries, prompts, labels)

        future = asyncio.run_coroutine_threadsafe(invoke(), self._event_loop())
        done, _ = concurrent.futures.wait([future], timeout=self.timeout)
        if not done:
            future.cancel()
            raise self._timed_out(len(queries))
        if future.cancelled():
            raise RewardFault("was cancelled", kind="raised", where=self.where)
        exc = future.exception()
        if exc is not None:
            raise self._raised(exc)
        return future.result()

    def _await_elsewhere(self, awaitable: Any) -> Any:
        async def wait() -> Any:
            return await awaitable

        try:
            return asyncio.run_coroutine_threadsafe(wait(), self._event_loop()).result()
        except (Exception, SystemExit) as exc:
            raise self._raised(exc) from None

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="reward-func-loop", daemon=True)
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    def close(self) -> None:
        """Stop the event loop of an async function (if one was started)."""
        with self._lock:
            loop, thread = self._loop, self._loop_thread
            self._loop = self._loop_thread = None
        if loop is not None and thread is not None:
            try:  # calls abandoned at their timeout: cancel them and let them unwind before the loop stops
                asyncio.run_coroutine_threadsafe(_cancel_pending(), loop).result(timeout=5)
            except (concurrent.futures.TimeoutError, RuntimeError):
                pass
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not thread.is_alive():
                loop.close()

    # ------------------------------------------------------------------------------------------------ errors
    def _raised(self, exc: BaseException) -> RewardFault:
        if isinstance(exc, RewardFault):
            return exc
        line = _user_frame(exc, self.path)
        at = f" (line {line})" if line else ""
        return RewardFault(
            f"raised {type(exc).__name__}: {exc}{at}",
            kind="raised", where=self.where, user_traceback=user_traceback(exc, self.path),
        )

    def _timed_out(self, n: int) -> RewardFault:
        return RewardFault(
            f"took longer than the timeout of {self.timeout:g}s on a batch of {n} "
            "(raise --timeout if this is expected)",
            kind="timeout", where=self.where,
        )

    # ------------------------------------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        """Ship the path, not the module: a Ray worker re-imports the file (the module is not importable by name)."""
        return {"path": str(self.path), "function": self.function, "timeout": self.timeout,
                "batching": self.batching}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["function"], state["timeout"],  # type: ignore[misc]
                      state.get("batching", "auto"))

    def __repr__(self) -> str:
        return f"FunctionReward({str(self.path)!r}, function={self.function!r}, timeout={self.timeout!r})"


def _is_scalar(value: Any) -> bool:
    """A number or a 0-d / 1-element tensor or array: what an OpenRLHF v0.11 per-sample function returns. (A list of
    one is not taken as that sign: a batch function that miscounts returns lists too.)"""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return True
    if hasattr(value, "shape") and hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return tuple(int(d) for d in value.shape) in ((), (1,))
    return False


def _rewards_of(value: Any) -> Any:
    return value.get("rewards") if isinstance(value, dict) else value


def _one_sample(value: Any) -> Any:
    """A per-sample return value in batch form: scalars become lists of one (rewards, scores and each extra_logs
    entry, which OpenRLHF v0.11 reads with .flatten()[0].item())."""
    def wrap(item: Any) -> Any:
        if isinstance(item, numbers.Real) and not isinstance(item, bool):
            return [item]
        if hasattr(item, "shape") and hasattr(item, "tolist") and tuple(item.shape) == ():
            return [item.tolist()]
        return item

    if isinstance(value, dict):
        out = dict(value)
        for key in ("rewards", "scores"):
            if key in out and out[key] is not None:
                out[key] = wrap(out[key])
        if isinstance(out.get("extra_logs"), dict):
            out["extra_logs"] = {k: wrap(v) for k, v in out["extra_logs"].items()}
        return out
    return wrap(value)


async def _cancel_pending() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------------------------------------------- loading
def load_module(path: Path) -> ModuleType:
    """Import a .py file under a unique module name; errors name the user's file and line."""
    where = str(path)
    if not path.exists():
        raise RewardFault("no such file", kind="missing_file", where=where)
    if path.is_dir():
        raise RewardFault("is a folder; give the path of a .py file", kind="missing_file", where=where)
    if path.suffix != ".py":
        raise RewardFault("is not a .py file; a reward function is loaded from Python source", kind="not_python",
                          where=where)
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    name = f"rlhfctl_reward_{_identifier(path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise RewardFault("cannot be imported as a Python module", kind="import", where=where)
    module = importlib.util.module_from_spec(spec)
    folder = str(resolved.parent)
    sys.path.insert(0, folder)  # so the file can import helper modules beside it, as it would as a script
    sys.modules[name] = module  # dataclasses and pickling look the module up by name while it executes
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise _syntax_fault(exc, path) from None
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        line = _user_frame(exc, resolved)
        at = f":{line}" if line else ""
        raise RewardFault(
            f"importing it raised {type(exc).__name__}: {exc}", kind="import", where=f"{path}{at}",
            user_traceback=user_traceback(exc, resolved),
        ) from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def find_function(module: ModuleType, path: Path, function: str) -> Callable[..., Any]:
    """The named callable of the module, or an error listing the functions the file does define."""
    fn = getattr(module, function, None)
    if fn is None:
        defined = sorted(
            n for n, v in vars(module).items()
            if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
        )
        import difflib

        close = difflib.get_close_matches(function, defined, n=1)
        hint = f"; did you mean {close[0]!r}? (pass --function {close[0]})" if close else ""
        listing = f" (functions it defines: {', '.join(defined)})" if defined else " (it defines no functions)"
        raise RewardFault(f"defines no function {function!r}{listing}{hint}", kind="no_function", where=str(path))
    if not callable(fn):
        raise RewardFault(f"{function!r} is {type(fn).__name__}, not a function", kind="no_function",
                          where=str(path))
    return fn


def check_signature(fn: Callable[..., Any], where: str) -> tuple[bool, bool]:
    """Whether fn can be called as fn(queries, prompts, labels) (OpenRLHF's call; if not, it must accept them
    by keyword, e.g. `def reward_func(**kwargs)`), and whether it takes **kwargs; a RewardFault if neither call
    binds."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True, False  # a builtin or C callable: nothing to check before calling it
    accepts_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    try:
        sig.bind(*ARGS)
        return True, accepts_kwargs
    except TypeError as exc:
        problem = str(exc)
    try:
        sig.bind(**{name: name for name in ARGS})
        return False, accepts_kwargs
    except TypeError:
        pass
    name = getattr(fn, "__name__", "reward_func")
    raise RewardFault(
        f"has signature {name}{sig}, which cannot be called as reward_func(queries, prompts, labels) ({problem}); "
        "define it as def reward_func(queries, prompts, labels, **kwargs)",
        kind="signature", where=where,
    )


def _is_async(fn: Callable[..., Any]) -> bool:
    call = getattr(fn, "__call__", None)
    return inspect.iscoroutinefunction(fn) or (
        not inspect.isfunction(fn) and call is not None and inspect.iscoroutinefunction(call)
    )


def _syntax_fault(exc: SyntaxError, path: Path) -> RewardFault:
    line = exc.lineno or 0
    text = (exc.text or "").rstrip("\n")
    caret = ""
    if text and exc.offset:
        stripped = text.lstrip()
        caret = "\n    " + stripped + "\n    " + " " * max(0, exc.offset - 1 - (len(text) - len(stripped))) + "^"
    return RewardFault(
        f"syntax error: {exc.msg}{caret}", kind="syntax", where=f"{path}:{line}" if line else str(path)
    )


def _identifier(stem: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in stem) or "module"


def _user_frames(exc: BaseException, path: Path) -> list[traceback.FrameSummary]:
    """The traceback from the first frame in the user's file on: our frames and importlib's are noise to them."""
    frames = traceback.extract_tb(exc.__traceback__)
    target = str(path.resolve())
    for i, frame in enumerate(frames):
        if _same_file(frame.filename, target):
            return frames[i:]
    return []


def _user_frame(exc: BaseException, path: Path) -> int | None:
    """The line in the user's file closest to where `exc` was raised."""
    lines = [f.lineno for f in _user_frames(exc, path) if _same_file(f.filename, str(path.resolve()))]
    return lines[-1] if lines else None


def user_traceback(exc: BaseException, path: Path) -> str:
    """A traceback of the user's code only (it starts in their file), ending with the exception line."""
    frames = _user_frames(exc, path)
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip("\n")


def _same_file(a: str, b: str) -> bool:
    try:
        return str(Path(a).resolve()) == b
    except OSError:
        return False
