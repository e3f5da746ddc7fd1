"""An asyncio event loop for vLLM's AsyncLLM where the callers are synchronous, and what every AsyncLLM user of
rlhfctl reads from a request's stream.

train-ppo's engine actor (rollout/engine.py) is called by Ray on plain threads (the trainer's batch API:
generate_samples, receive_weights, ...), but AsyncLLM lives on an event loop: its output handler is a task of the
loop it first ran on, and its requests, aborts, pauses and collective RPCs are coroutines. `LoopThread` runs that
one loop in a daemon thread; each synchronous method submits a coroutine and waits for it. The loop interleaves
them, so a weight sync submitted while a generation is in flight runs beside it (partial rollouts) instead of
queueing behind it.

A caller that stops waiting (a timeout, Ctrl-C in the calling thread) cancels its coroutine, and a cancelled
`AsyncLLM.generate` aborts its request inside the engine: nothing keeps generating for a caller that is gone.
serve-rm's vLLM backend (serving/vllm_backend.py) runs AsyncLLM on the server's own loop and shares `final_output`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Optional, TypeVar

T = TypeVar("T")


class LoopThread:
    """One asyncio loop in a daemon thread; `run(coro)` from any other thread waits for the coroutine's result."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
        """The coroutine's result, run on the loop. If the wait ends otherwise (`timeout` seconds passed, the
        calling thread is interrupted), the coroutine is cancelled before the exception propagates."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no result within {timeout:g} s; its requests were aborted") from None
        except BaseException:
            future.cancel()  # a no-op when it already finished (the coroutine raised)
            raise

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)


async def final_output(outputs: AsyncIterator[Any]) -> Any:
    """The final output of one AsyncLLM request's stream."""
    final = None
    async for final in outputs:
        pass
    assert final is not None, "vLLM answered a request with no output"
    return final
