"""Roles in the driver's own process: a run of one worker per role on this machine's CPUs needs no Ray worker for them
(--role-workers auto|driver); vLLM engines, when asked for, stay Ray actors.

Such a run on Ray pays for a process per role (each imports torch, transformers and DeepSpeed: about 5 CPU seconds)
and for a Ray round trip, with pickled tensors, per call; its workers then take turns on the same cores anyway. Here
each role's worker is the same `WorkerActor` object a Ray actor would host, called directly: same worker code, same
errors (an unexpected exception is one WorkerError line), same busy timings for --profile. A call runs when it is
started and its `Done` holds the result, so the trainer's code reads the same with either host.

A Ctrl-C while a worker computes waits for the call to finish and is raised by the next `get`, as it would be
raised in ray.get while the Ray worker finished its call: an update is never cut in half, so the checkpoint that
Ctrl-C writes is a step's end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any, Callable

from rlhfctl.distributed.placement import PlacementPlan
from rlhfctl.distributed.roles import Done, RoleGroup, W, WorkerActor, WorkerPlace, get


def driver_threads() -> int:
    """torch threads for roles in the driver: every core this process may use (the roles take turns)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class DriverRoleGroup(RoleGroup[W]):
    """A role's one worker, hosted in this process; `plan` must be in-driver (placement.plan_in_driver)."""

    def __init__(self, role: str, plan: PlacementPlan, worker_cls: type[W], *args: Any, **kwargs: Any) -> None:
        if not plan.in_driver or plan.roles[role].num_workers != 1:
            raise ValueError(f"{role}: roles run in the driver only as one worker each (placement.plan_in_driver)")
        self.role = role
        self.worker_cls = worker_cls
        host = WorkerActor(driver_threads(), {"TOKENIZERS_PARALLELISM": "false", "DS_ACCELERATOR": "cpu"}, role)
        self.workers = [host]
        self._lock = threading.Lock()  # one call at a time, as a Ray actor with max_concurrency=1 runs them
        self.places = [WorkerPlace(role, 0, 0, "driver", "127.0.0.1")]
        self._ready = self._run(lambda: host.init_worker(worker_cls, None, 0, 1, *args, **kwargs))

    def wait_ready(self) -> "DriverRoleGroup[W]":
        get(self._ready)
        return self

    def _start(self, rank: int, method: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Done:
        host = self.workers[rank]
        return self._run(lambda: host.apply(method, *args, **kwargs))

    def _run(self, fn: Callable[[], Any]) -> Done:
        with self._lock, _ctrl_c_deferred() as interrupted:
            try:
                done = Done(fn())
            except Exception as exc:
                done = Done(error=exc)
        done.interrupted = interrupted.is_set()
        return done

    def busy_seconds(self) -> list[Any]:
        return [self._run(host.busy_seconds) for host in self.workers]

    def rendezvous(self) -> tuple[str, int]:
        return self.workers[0].rendezvous()

    def shutdown(self) -> None:
        self.workers = []


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[threading.Event]:
    """In the main thread: a SIGINT during the block is noted (the event), not raised in the middle of it. A process
    whose SIGINT is ignored or handled otherwise is left as it is."""
    hit = threading.Event()
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield hit  # signals reach the main thread only
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: hit.set())
    try:
        yield hit
    finally:
        signal.signal(signal.SIGINT, previous)


def start_role(role: str, plan: PlacementPlan, worker_cls: type[W], *args: Any, **kwargs: Any) -> RoleGroup[W]:
    """The role's workers where the plan puts them: in this process (DriverRoleGroup) or as Ray actors."""
    group = DriverRoleGroup if plan.in_driver else RoleGroup
    return group(role, plan, worker_cls, *args, **kwargs)


def in_driver_report(groups: dict[str, RoleGroup[Any]]) -> dict[str, Any]:
    """placement.json for roles in the driver: which roles, and the process they share."""
    return {"in_driver": {"pid": os.getpid(), "threads": driver_threads(), "roles": list(groups)}}
