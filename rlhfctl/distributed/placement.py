"""Start or join Ray, and place the roles (actor, ref, critic, reward) from OpenRLHF's placement flags.

One data-parallel worker per requested GPU. Colocated roles share the bundles of one placement group, each taking
a fraction of a bundle, as OpenRLHF does. On a cluster without GPUs each requested GPU becomes a CPU worker (one
warning); a placement the cluster cannot satisfy fails within --placement-timeout, naming what was asked and what
the cluster has, rather than waiting forever.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any, TYPE_CHECKING

from rlhfctl.errors import ConfigError, RlhfctlError

if TYPE_CHECKING:
    from rlhfctl.config import TrainPPOConfig


class PlacementError(RlhfctlError):
    """The cluster cannot hold the roles that were asked for."""


@dataclass
class RolePlan:
    """How one role runs: `num_workers` data-parallel workers, each on a share of one bundle of `group`."""

    name: str
    num_workers: int
    group: str
    share: float  # fraction of a bundle each worker takes (1 / roles sharing the group)

    def resources(self, use_gpus: bool) -> dict[str, float]:
        """Ray actor options for one worker of this role."""
        if use_gpus:
            return {"num_gpus": self.share, "num_cpus": 0}
        return {"num_gpus": 0, "num_cpus": self.share}


@dataclass
class PlacementPlan:
    roles: dict[str, RolePlan]
    bundles: dict[str, int]  # placement group name -> bundle count
    use_gpus: bool
    groups: dict[str, Any] = field(default_factory=dict)  # name -> ray PlacementGroup, once placed
    started_ray: bool = False  # this process started Ray, so release() stops it

    def bundle(self, use_gpus: bool) -> dict[str, float]:
        return {"GPU": 1.0, "CPU": 1.0} if use_gpus else {"CPU": 1.0}

    def describe(self) -> str:
        """'actor 2, ref 2 (colocated with actor), critic 2' — what was asked, in the user's terms."""
        out = []
        for plan in self.roles.values():
            owner = next(p.name for p in self.roles.values() if p.group == plan.group)
            out.append(f"{plan.name} {plan.num_workers}" + (f" (colocated with {owner})" if owner != plan.name else ""))
        return ", ".join(out)

    def total(self) -> dict[str, float]:
        """Resources of every bundle together."""
        count = sum(self.bundles.values())
        return {k: v * count for k, v in self.bundle(self.use_gpus).items()}


def needed_roles(cfg: TrainPPOConfig) -> list[str]:
    """The roles a run uses: the reference only with a KL term, the critic only for gae, a reward model only with
    --reward-pretrain and no --remote-rm-url (a reward server or reward_func.py, when given, is the reward)."""
    roles = ["actor"]
    if cfg.init_kl_coef > 0:
        roles.append("ref")
    if cfg.advantage_estimator == "gae":
        roles.append("critic")
    if cfg.reward_pretrain is not None and cfg.remote_rm_url is None:
        roles.append("reward")
    if cfg.vllm_num_engines:
        roles.append("vllm")
    return roles


def _workers(cfg: TrainPPOConfig, r: str) -> int:
    """Workers of a role: one per requested GPU; one per vLLM engine (its tensor-parallel GPUs are its own)."""
    if r == "vllm":
        return cfg.vllm_num_engines or 0
    return getattr(cfg, f"{r}_num_nodes") * getattr(cfg, f"{r}_num_gpus_per_node")


def plan_roles(cfg: TrainPPOConfig, roles: list[str], use_gpus: bool) -> PlacementPlan:
    """Workers per role and which roles share bundles, checked against the colocation flags."""
    counts = {r: _workers(cfg, r) for r in roles}
    group_of = {r: r for r in roles}
    if cfg.colocate_all_models:
        group_of = {r: "actor" for r in roles}
    else:
        if cfg.colocate_actor_ref and "ref" in roles:
            group_of["ref"] = "actor"
        if cfg.colocate_critic_reward and "critic" in roles and "reward" in roles:
            group_of["reward"] = "critic"
    gpus = {**counts, **({"vllm": counts["vllm"] * cfg.vllm_tensor_parallel_size} if "vllm" in counts else {})}
    problems = []
    for role, group in group_of.items():
        if group != role and gpus[role] != gpus[group]:
            what = ("--vllm-num-engines x --vllm-tensor-parallel-size" if "vllm" in (role, group)
                    else "--*-num-nodes x --*-num-gpus-per-node")
            problems.append(f"{role} asks for {gpus[role]} GPUs but is colocated with {group}, which asks for "
                            f"{gpus[group]}; colocated roles need the same {what}")
    if problems:
        raise ConfigError("\n".join(problems))
    sharing = {g: sum(1 for r in roles if group_of[r] == g) for g in set(group_of.values())}
    plans = {r: RolePlan(r, counts[r], group_of[r], 1.0 / sharing[group_of[r]]) for r in roles}
    bundles = {g: counts[g] for g in sharing}
    return PlacementPlan(plans, bundles, use_gpus)


def start_ray(cfg: TrainPPOConfig, cpu_bundles_needed: int) -> bool:
    """Join --ray-address or start a local Ray; returns True when this call started it (so it should stop it).

    A local Ray without GPUs is given at least as many logical CPUs as there are CPU workers, so the seed's GPU
    counts run on a small machine (each worker still uses one torch thread per CPU it owns)."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    common = {"ignore_reinit_error": True, "log_to_driver": True, "logging_level": "warning",
              "include_dashboard": False}
    if cfg.ray_address:
        try:
            ray.init(address=cfg.ray_address, **common)
        except Exception as exc:  # ConnectionError, RuntimeError, ... depending on what is wrong
            raise PlacementError(f"--ray-address {cfg.ray_address}: cannot join the Ray cluster: {exc}") from None
        return True
    gpus = local_gpus()
    num_cpus = max(os.cpu_count() or 1, cpu_bundles_needed if gpus == 0 else 0)
    ray.init(num_cpus=num_cpus, num_gpus=gpus, **common)
    return True


def local_gpus() -> int:
    """CUDA GPUs on this machine (0 where torch has no CUDA)."""
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def place(cfg: TrainPPOConfig, roles: list[str]) -> PlacementPlan:
    """Start/join Ray and reserve placement groups for `roles`, or fail within --placement-timeout."""
    import ray
    from ray.util.placement_group import placement_group

    cpu_plan = plan_roles(cfg, roles, use_gpus=False)
    started = start_ray(cfg, sum(cpu_plan.bundles.values()))
    have = ray.cluster_resources()
    use_gpus = have.get("GPU", 0) > 0
    plan = plan_roles(cfg, roles, use_gpus)
    plan.started_ray = started
    if not use_gpus:
        asked = sum(p.num_workers for p in plan.roles.values())
        warnings.warn(f"no GPUs in the Ray cluster: the {asked} requested GPU workers ({plan.describe()}) run as "
                      "CPU workers", stacklevel=2)
    for name, count in plan.bundles.items():
        plan.groups[name] = placement_group([plan.bundle(use_gpus)] * count, strategy="PACK",
                                            name=f"rlhfctl-{name}-{os.getpid()}")
    ready, _ = ray.wait([pg.ready() for pg in plan.groups.values()], num_returns=len(plan.groups),
                        timeout=cfg.placement_timeout)
    if len(ready) < len(plan.groups):
        available = ray.available_resources()
        release(plan)
        raise PlacementError(
            f"the Ray cluster could not place the roles within {cfg.placement_timeout:g}s (--placement-timeout): "
            f"asked for {plan.describe()} = {_fmt(plan.total())} in bundles of {_fmt(plan.bundle(use_gpus))}; the "
            f"cluster has {_fmt(have)} ({_fmt(available)} free)"
        )
    return plan


def _fmt(resources: dict[str, float]) -> str:
    keys = [k for k in ("GPU", "CPU") if k in resources] or list(resources)[:2]
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in keys) or "nothing"


def release(plan: PlacementPlan) -> None:
    """Give the placement groups back, and stop Ray if this process started it."""
    import ray
    from ray.util.placement_group import remove_placement_group

    if not ray.is_initialized():
        return
    for pg in plan.groups.values():
        try:
            remove_placement_group(pg)
        except Exception:  # already gone with its cluster
            pass
    plan.groups.clear()
    if plan.started_ray:
        ray.shutdown()
