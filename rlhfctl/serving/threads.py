"""torch's thread count for the process that scores: the server's model worker, bench-rm in-process.

A module of its own so the model worker (serving/worker.py) and the server (serving/server.py) both use it without
importing each other.
"""

from __future__ import annotations

import os


def default_num_threads() -> int:
    """Cores this process may use, minus one for the event loop, at least 1.

    On a 2-core machine a forward with 2 OpenMP threads beside a busy event loop ran ~30x slower than with 1:
    spinning threads fight for the cores. So the model never takes every core by default."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


def configure_threads(num_threads: int | None) -> int:
    """Set torch's intra-op threads (`--num-threads`, else default_num_threads()); return the count used."""
    import torch

    count = num_threads or default_num_threads()
    torch.set_num_threads(count)
    # The tokenizers library batch-encodes on its own thread pool, whose spinning threads take CPU from the
    # model and the event loop on a small machine; the server's batches are small, so one thread is enough.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return count
