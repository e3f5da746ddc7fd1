"""Replicas of one reward server: which one takes the next chunk, which are out, and when one comes back.

A chunk goes to the live replica with the fewest requests in flight (ties rotate, so sequential calls spread
evenly). A replica that refused a connection, timed out or answered 5xx is taken out: no chunk goes to it until
its GET /health answers 200, asked every `health_interval` seconds by a daemon thread that runs only while a
replica is out. The counts per replica are what train-ppo logs (reward/replica<i>_share, reward/replicas_up) and
serve-rm's /metrics exports when it fans out itself.
"""

from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass, replace
from typing import Callable, Container, Sequence

log = logging.getLogger(__name__)


@dataclass
class ReplicaState:
    """One replica's figures since the client opened; `reward` names the --reward term it serves (serve-rm)."""

    url: str
    index: int
    up: bool = True
    inflight: int = 0
    chunks: int = 0
    samples: int = 0
    failures: int = 0
    cause: str = ""
    reward: str = ""


class ReplicaSet:
    """The replicas of one RemoteReward; thread-safe. `probe(url)` is True when the replica at `url` is healthy."""

    def __init__(self, urls: Sequence[str], health_interval: float, probe: Callable[[str], bool]) -> None:
        self._states = [ReplicaState(url, i) for i, url in enumerate(urls)]
        self.health_interval = health_interval
        self._probe = probe
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._stop = threading.Event()
        self._prober: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._states)

    def up_count(self) -> int:
        with self._lock:
            return sum(s.up for s in self._states)

    def acquire(self, avoid: Container[int] = (), *, any_state: bool = False) -> ReplicaState | None:
        """The live replica, not in `avoid`, with the fewest requests in flight, now counted in flight; None when
        there is none. `any_state`: an out replica may be chosen too (live ones first), which is how a chunk
        retries after every replica failed it."""
        with self._lock:
            turn, n = next(self._turn), len(self._states)
            pool = [s for s in self._states if s.index not in avoid and (s.up or any_state)]
            if not pool:
                return None
            chosen = min(pool, key=lambda s: (not s.up, s.inflight, (s.index - turn) % n))
            chosen.inflight += 1
            return chosen

    def release(self, replica: ReplicaState, answered: int | None = None) -> None:
        """The request to `replica` is over; `answered` samples came back scored (None: it failed)."""
        with self._lock:
            replica.inflight -= 1
            if answered is not None:
                replica.chunks += 1
                replica.samples += answered
                if not replica.up:  # an out replica answered a retry: it is back
                    replica.up = True
                    log.warning("reward server %s answers again; it takes chunks again", replica.url)

    def take_out(self, replica: ReplicaState, cause: str) -> None:
        """No chunk goes to `replica` until its /health answers; the probe thread starts if it is not running."""
        with self._lock:
            replica.failures += 1
            replica.cause = cause
            if not replica.up or len(self._states) == 1:  # a lone server is retried after the backoff, as ever
                return
            replica.up = False
            others = sum(s.up for s in self._states)
            if self._prober is None:
                self._prober = threading.Thread(target=self._probe_loop, name="reward-replica-probe", daemon=True)
                self._prober.start()
        log.warning("reward server %s taken out (%s); %d of %d replicas left, /health probed every %gs",
                    replica.url, cause, others, len(self._states), self.health_interval)

    def states(self) -> list[ReplicaState]:
        """A copy of every replica's figures, in the order the URLs were given."""
        with self._lock:
            return [replace(s) for s in self._states]

    def close(self) -> None:
        self._stop.set()

    def _probe_loop(self) -> None:
        """Ask each out replica's /health every interval; stop when all are back (or at close)."""
        while not self._stop.wait(self.health_interval):
            with self._lock:
                out = [s for s in self._states if not s.up]
                if not out:
                    self._prober = None  # under the lock: a replica taken out from now on starts a new thread
                    return
            for replica in out:
                if self._probe(replica.url):
                    with self._lock:
                        replica.up = True
                    log.warning("reward server %s is healthy again; it takes chunks again", replica.url)
