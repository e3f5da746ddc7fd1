"""Ray actors for the roles: one `WorkerActor` hosts one worker object (ppo/workers.py); a `RoleGroup[W]` is a role's
data-parallel workers of class W.

A worker method is named by the method itself, never by a string: `actor.all(PolicyWorker.save_checkpoint, path)`.
A misspelt method is an AttributeError where the call is written, a method of another class a TypeError there, and
a type checker sees the method's parameters (ParamSpec) - instead of a failure inside a Ray worker at run time.

Each worker learns its rank, the world size and the rendezvous address through MASTER_ADDR/MASTER_PORT/RANK/
WORLD_SIZE before its engine is built (torch.distributed reads them), and sets torch's thread count to the CPUs it
owns: spinning OpenMP threads of several processes on the same cores make each of them many times slower.

Errors cross the Ray boundary as the user would see them in-process: an RlhfctlError raised in a worker is
re-raised as itself by `get`, and any other exception becomes one WorkerError line naming the role, the rank and
the exception (the worker's traceback kept for --debug), never a remote traceback. A worker whose process or node
is gone becomes a WorkerLost naming its role, rank and node (each worker reports where it runs when it starts).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Callable, Concatenate, Generic, Optional, ParamSpec, TypeVar

from rlhfctl.distributed.placement import PlacementPlan, bundle_nodes
from rlhfctl.errors import RlhfctlError, WorkerError

W = TypeVar("W")
P = ParamSpec("P")
R = TypeVar("R")
Method = Callable[Concatenate[W, P], R]  # a worker class's method, called on the worker object in the actor

@dataclass(frozen=True)
class WorkerPlace:
    """Where one worker of a role runs, as the worker itself reported it."""

    role: str
    rank: int
    bundle: int
    node_id: str
    node_ip: str

    def describe(self) -> str:
        return f"{self.role} worker {self.rank} on node {self.node_ip} ({self.node_id[:8]})"


# Ray actor id (hex) -> where that worker runs: lets a lost actor be named by role and node.
_PLACES: dict[str, WorkerPlace] = {}


class WorkerLost(WorkerError):
    """A worker's process or its whole node is gone (`place` says which, when known)."""

    def __init__(self, message: str, place: Optional[WorkerPlace] = None, node_died: bool = False,
                 remote_traceback: str = "") -> None:
        super().__init__(message, remote_traceback)
        self.place = place
        self.node_died = node_died


class WorkerActor:
    """Runs inside a Ray worker process: builds the worker object, then forwards method calls to it."""

    def __init__(self, num_threads: int, env: dict[str, str], role: str = "worker") -> None:
        import warnings

        self.role = role
        os.environ.update(env)
        # torch.distributed's deprecation notes, repeated by every worker, would bury the training log.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        import torch

        torch.set_num_threads(max(1, num_threads))
        self.worker: Any = None
        self.busy: dict[str, float] = {}  # seconds per method since the last busy_seconds()

    def rendezvous(self) -> tuple[str, int]:
        """This node's address and a free port, for rank 0 to host torch.distributed's rendezvous."""
        import ray

        from rlhfctl.net import free_port

        return ray.util.get_node_ip_address(), free_port("")  # every interface: ranks on other nodes connect

    def where(self) -> tuple[str, str]:
        """(node id, node IP) of the node this worker runs on."""
        import ray

        return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()

    def init_worker(self, worker_cls: type, rendezvous: Optional[tuple[str, int]], rank: int, world: int,
                    *args: Any, **kwargs: Any) -> None:
        """Build the worker; `rendezvous` is worker 0's (address, port), handed over by Ray as an object reference
        that resolves once worker 0 has started (None: a world of one, in the driver's process)."""
        if rendezvous is not None:
            addr, port = rendezvous
            os.environ.update({"MASTER_ADDR": addr, "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": "0",
                               "WORLD_SIZE": str(world)})
        self.worker = self._guarded("starting", worker_cls, *args, **kwargs)

    def apply(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`method(worker, *args, **kwargs)`: the driver passes the worker class's method itself."""
        from rlhfctl.distributed import busy

        with busy.recording(self.busy), busy.timed(method.__name__):
            return self._guarded(method.__name__, method, self.worker, *args, **kwargs)

    def busy_seconds(self) -> dict[str, float]:
        """Seconds spent in each worker method (and timed part) since the last call (--profile)."""
        from rlhfctl.distributed import busy

        return busy.take(self.busy)

    def _guarded(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run fn; an unexpected exception becomes a one-line WorkerError naming role, rank and exception."""
        try:
            return fn(*args, **kwargs)
        except RlhfctlError:
            raise
        except Exception as exc:
            import traceback

            rank = os.environ.get("RANK", "0")
            raise WorkerError(f"{self.role} worker {rank} failed ({what}): {type(exc).__name__}: {_first_line(exc)}",
                              remote_traceback=traceback.format_exc()) from None


class RoleGroup(Generic[W]):
    """The `num_workers` Ray actors of one role, each hosting a `worker_cls` object, placed on their placement
    group's bundles."""

    def __init__(self, role: str, plan: PlacementPlan, worker_cls: type[W], *args: Any, max_concurrency: int = 1,
                 **kwargs: Any) -> None:
        """`max_concurrency`: how many calls a worker runs at once, each on its own thread (1: one after another;
        more only for a worker whose methods are safe to run side by side, as the vLLM engine's)."""
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.role = role
        self.worker_cls = worker_cls
        role_plan = plan.roles[role]
        resources = role_plan.resources(plan.use_gpus)
        threads = max(1, int(resources["num_cpus"])) if not plan.use_gpus else 1
        base_env = {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads)}
        if not plan.use_gpus:  # DeepSpeed would probe for an accelerator and warn in every worker
            base_env["DS_ACCELERATOR"] = "cpu"
        remote_cls = ray.remote(WorkerActor)
        self.workers = []
        for rank in range(role_plan.num_workers):
            strategy = PlacementGroupSchedulingStrategy(
                placement_group=plan.groups[role_plan.group],
                placement_group_bundle_index=role_plan.bundle_index(rank),
            )
            self.workers.append(remote_cls.options(
                scheduling_strategy=strategy, name=None, max_concurrency=max_concurrency, **resources
            ).remote(threads, base_env, role))
        world = len(self.workers)
        self.places: list[WorkerPlace] = []
        self._where = [w.where.remote() for w in self.workers]
        self._bundles = [role_plan.bundle_index(rank) for rank in range(world)]
        # Nothing here waits: the workers build their models in parallel (and join one process group) once worker
        # 0's rendezvous resolves, while the driver goes on to start the other roles; wait_ready() collects them.
        rendezvous = self.workers[0].rendezvous.remote()
        self._ready = [w.init_worker.remote(worker_cls, rendezvous, rank, world, *args, **kwargs)
                       for rank, w in enumerate(self.workers)]

    def wait_ready(self) -> "RoleGroup[W]":
        """Block until every worker has built its model and engine (raises what a worker raised); each worker's node
        is known from then on (`places`), so a worker lost later is named by role and node."""
        self.places = [WorkerPlace(self.role, rank, self._bundles[rank], *where)
                       for rank, where in enumerate(get(self._where))]
        for worker, place in zip(self.workers, self.places):
            _PLACES[worker._actor_id.hex()] = place
        get(self._ready)
        return self

    def __len__(self) -> int:
        return len(self.workers)

    def all(self, method: Method[W, P, R], *args: P.args, **kwargs: P.kwargs) -> list[Any]:
        """Start `method(*args)` on every worker; returns the futures (`get` them)."""
        self._check(method)
        return [self._start(rank, method, args, kwargs) for rank in range(len(self.workers))]

    def on(self, rank: int, method: Method[W, P, R], *args: P.args, **kwargs: P.kwargs) -> Any:
        """Start `method(*args)` on worker `rank` (its share of a batch); returns the future."""
        self._check(method)
        return self._start(rank, method, args, kwargs)

    def _start(self, rank: int, method: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
        return call(self.workers[rank], method, *args, **kwargs)

    def busy_seconds(self) -> list[Any]:
        """Each worker's busy_seconds() (futures): its compute per method since the last ask."""
        return [w.busy_seconds.remote() for w in self.workers]

    def rendezvous(self) -> tuple[str, int]:
        """Worker 0's node address and a free port there, for a group it hosts (the weight sync's)."""
        return get(self.workers[0].rendezvous.remote())

    def _check(self, method: Callable[..., Any]) -> None:
        """A method of another class (the critic's `values` sent to the reference) fails here, in the driver."""
        if getattr(self.worker_cls, method.__name__, None) is not method:
            raise TypeError(f"{method.__qualname__!r} is not a method of the {self.role} "
                            f"workers ({self.worker_cls.__name__})")

    def shutdown(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w)
        self.workers = []


def call(handle: Any, method: Method[W, P, R], *args: P.args, **kwargs: P.kwargs) -> Any:
    """Start `method(*args)` on the worker hosted by the Ray actor `handle` (a worker's peers, handed to it as
    handles: the engines a policy worker streams weights to); returns the future."""
    return handle.apply.remote(method, *args, **kwargs)


class Done:
    """The future of a call that already ran in this process (roles in the driver, distributed/in_driver.py): its
    result or the exception it raised, and whether a Ctrl-C came while it ran (delivered by `get`, as a Ctrl-C
    during ray.get would be, so the call's work is kept whole)."""

    def __init__(self, value: Any = None, error: Optional[BaseException] = None, interrupted: bool = False) -> None:
        self.value, self.error, self.interrupted = value, error, interrupted

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def get(futures: Any) -> Any:
    """ray.get (imported lazily), with a worker's error re-raised as the user would see it in-process; calls that ran
    in this process (Done) give their result, and a Ctrl-C that came during one of them is raised here."""
    items = futures if isinstance(futures, list) else [futures]
    if not items:
        return []
    if any(isinstance(f, Done) for f in items):
        interrupted = [f for f in items if isinstance(f, Done) and f.interrupted]
        for f in interrupted:
            f.interrupted = False
        if interrupted:
            raise KeyboardInterrupt
        out = [f.result() if isinstance(f, Done) else get(f) for f in items]
        return out if isinstance(futures, list) else out[0]
    import ray

    try:
        return ray.get(futures)
    except ray.exceptions.RayError as exc:
        raise unwrap_remote_error(exc) from None


def unwrap_remote_error(exc: BaseException) -> BaseException:
    """The error a user should see for a Ray error: our own error raised in a worker as itself, anything else as
    one WorkerError line (the remote traceback kept for --debug)."""
    import ray

    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause
        if isinstance(cause, RlhfctlError):
            return cause
        if isinstance(cause, ray.exceptions.RayError):
            return unwrap_remote_error(cause)
        name = exc.function_name.rsplit(".", 1)[-1] if exc.function_name else "a task"
        return WorkerError(f"a Ray worker failed in {name}: {type(cause).__name__}: {_first_line(cause)}",
                           remote_traceback=exc.traceback_str or "")
    if isinstance(exc, ray.exceptions.RayActorError):
        place = _PLACES.get(exc.actor_id or "")
        if place is not None:
            node_died = not _node_alive(place.node_id)
            why = "its node left the cluster (stopped or died)" if node_died else \
                f"its process died ({_first_line(exc) or 'no reason given'})"
            return WorkerLost(f"lost the {place.describe()}: {why}", place, node_died, remote_traceback=str(exc))
        return WorkerLost(f"a Ray worker process died ({_first_line(exc) or 'no reason given'}); its log is in the "
                           "Ray session's logs folder (/tmp/ray/session_latest/logs)", remote_traceback=str(exc))
    if isinstance(exc, ray.exceptions.ObjectLostError):
        return WorkerLost(f"a result held on a node that left the cluster was lost ({type(exc).__name__})",
                          remote_traceback=str(exc))
    return WorkerError(f"Ray: {type(exc).__name__}: {_first_line(exc)}", remote_traceback=str(exc))


def _node_alive(node_id: str) -> bool:
    """Whether the Ray cluster still lists `node_id` as alive (True when that cannot be asked)."""
    import ray

    try:
        return any(n["NodeID"] == node_id and n.get("Alive") for n in ray.nodes())
    except Exception:
        return True


def placement_report(plan: PlacementPlan, groups: dict[str, "RoleGroup"]) -> dict[str, Any]:
    """What the plan asked for, where Ray put each bundle, and where each worker says it runs (placement.json)."""
    nodes = bundle_nodes(plan)
    return {
        "groups": {name: {"strategy": gp.strategy, "bundle": gp.bundle(plan.use_gpus), "bundle_nodes": nodes[name]}
                   for name, gp in plan.group_plans.items()},
        "roles": {role: {"group": plan.roles[role].group, "workers": [asdict(p) for p in g.places]}
                  for role, g in groups.items()},
    }


def describe_places(groups: dict[str, "RoleGroup"]) -> str:
    """'actor 0,1 on 10.0.0.1 (ab12cd34); ref 0 on ..., ref 1 on ...' for the run's log."""
    parts = []
    for role, group in groups.items():
        by_node: dict[tuple[str, str], list[str]] = {}
        for p in group.places:
            by_node.setdefault((p.node_ip, p.node_id[:8]), []).append(str(p.rank))
        parts.append(", ".join(f"{role} {','.join(ranks)} on {ip} ({nid})" for (ip, nid), ranks in by_node.items()))
    return "; ".join(parts)


def _first_line(exc: BaseException) -> str:
    """An exception's message cut to its first non-empty line, so the user's error stays one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] + (" (more with --debug)" if len(lines) > 1 else "") if lines else ""
