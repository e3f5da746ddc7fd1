"""Ray actors for the roles: one `WorkerActor` hosts one worker object (ppo/workers.py); a `RoleGroup` is a role's
data-parallel workers, and spreads a batch over them.

Each worker learns its rank, the world size and the rendezvous address through MASTER_ADDR/MASTER_PORT/RANK/
WORLD_SIZE before its engine is built (torch.distributed reads them), and sets torch's thread count to the CPUs it
owns: spinning OpenMP threads of several processes on the same cores make each of them many times slower.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from rlhfctl.distributed.placement import PlacementPlan


class WorkerActor:
    """Runs inside a Ray worker process: builds the worker object, then forwards method calls to it."""

    def __init__(self, num_threads: int, env: dict[str, str]) -> None:
        import warnings

        os.environ.update(env)
        # torch.distributed's deprecation notes, repeated by every worker, would bury the training log.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        import torch

        torch.set_num_threads(max(1, num_threads))
        self.worker: Any = None

    def rendezvous(self) -> tuple[str, int]:
        """This node's address and a free port, for rank 0 to host torch.distributed's rendezvous."""
        import ray

        from rlhfctl.distributed.process_group import free_port

        return ray.util.get_node_ip_address(), free_port()

    def init_worker(self, worker_cls: type, env: dict[str, str], *args: Any, **kwargs: Any) -> None:
        os.environ.update(env)
        self.worker = worker_cls(*args, **kwargs)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.worker, method)(*args, **kwargs)


class RoleGroup:
    """The `num_workers` Ray actors of one role, placed on their placement group's bundles."""

    def __init__(self, role: str, plan: PlacementPlan, worker_cls: type, *args: Any, **kwargs: Any) -> None:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.role = role
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
                placement_group=plan.groups[role_plan.group], placement_group_bundle_index=rank
            )
            self.workers.append(remote_cls.options(
                scheduling_strategy=strategy, name=None, max_concurrency=1, **resources
            ).remote(threads, base_env))
        world = len(self.workers)
        addr, port = ray.get(self.workers[0].rendezvous.remote())
        # Workers build their models in parallel (and join one process group); wait_ready() collects them.
        self._ready = [
            w.init_worker.remote(worker_cls, {"MASTER_ADDR": addr, "MASTER_PORT": str(port), "RANK": str(rank),
                                              "LOCAL_RANK": "0", "WORLD_SIZE": str(world)}, *args, **kwargs)
            for rank, w in enumerate(self.workers)
        ]

    def wait_ready(self) -> "RoleGroup":
        """Block until every worker has built its model and engine (raises what a worker raised)."""
        import ray

        ray.get(self._ready)
        return self

    def __len__(self) -> int:
        return len(self.workers)

    def call_all(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Start `method(*args)` on every worker; returns the futures (ray.get them)."""
        return [w.call.remote(method, *args, **kwargs) for w in self.workers]

    def call_each(self, method: str, shards: Sequence[Any], **kwargs: Any) -> list[Any]:
        """Start `method(shard)` on worker i with shards[i]; returns the futures."""
        if len(shards) != len(self.workers):
            raise ValueError(f"{self.role}: {len(shards)} shards for {len(self.workers)} workers")
        return [w.call.remote(method, shard, **kwargs) for w, shard in zip(self.workers, shards)]

    def shutdown(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w)
        self.workers = []


def get(futures: Any) -> Any:
    """ray.get, imported lazily so callers need not import ray."""
    import ray

    return ray.get(futures)
