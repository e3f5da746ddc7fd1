"""Start or join Ray, and place the roles (actor, ref, critic, reward) from OpenRLHF's placement flags.

One data-parallel worker per requested GPU. A role of its own gets one bundle per node ({GPU: n, CPU: n} for
--*-num-gpus-per-node n) in a STRICT_SPREAD placement group, so --*-num-nodes 2 really means two nodes, as
OpenRLHF placed roles; colocated roles share one bundle per GPU (PACK), each worker taking a fraction of its bundle,
as OpenRLHF colocates (a fraction of a multi-GPU bundle would let Ray stack two workers on one GPU).

The driver joins a cluster when given one (--ray-address, RAY_ADDRESS, or the cluster of the Ray job it runs in)
and starts a local Ray only otherwise; never a second Ray inside a job. On a cluster without GPUs each requested GPU
becomes a CPU worker (one warning); a placement the cluster cannot satisfy fails within --placement-timeout, naming
what was asked and what the cluster has, rather than waiting forever.
"""

from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, TYPE_CHECKING

from rlhfctl.errors import ConfigError, RlhfctlError

if TYPE_CHECKING:
    from rlhfctl.config import PlacementArgs, PPOArgs, RewardModelArgs, RewardSourceArgs, VLLMArgs

# Set by `ray job submit`'s supervisor for the entrypoint it runs (beside RAY_ADDRESS): we are inside a Ray job.
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
CONNECT_TIMEOUT_S = 10.0


class PlacementError(RlhfctlError):
    """The cluster cannot hold the roles that were asked for."""


@dataclass
class RolePlan:
    """How one role runs: `num_workers` data-parallel workers, `per_bundle` of them on each bundle of `group`,
    each taking `share` of a GPU (or CPU)."""

    name: str
    num_nodes: int
    gpus_per_node: int
    group: str
    share: float  # fraction of a GPU each worker takes (1 / roles sharing the group)
    per_bundle: int = 1  # workers of this role on one bundle: gpus_per_node for per-node bundles, else 1
    stride: int = 1  # bundles one worker spans: a tensor-parallel vLLM engine's N GPUs (or CPUs), one bundle each

    @property
    def num_workers(self) -> int:
        return self.num_nodes * self.gpus_per_node

    def bundle_index(self, rank: int) -> int:
        """The worker's (first) bundle."""
        return rank * self.stride // self.per_bundle

    def resources(self, use_gpus: bool) -> dict[str, float]:
        """Ray actor options for one worker of this role. A tensor-parallel engine on GPUs holds none itself: its
        Ray executor starts one worker per GPU bundle (rollout/engine.py)."""
        if use_gpus:
            return {"num_gpus": self.share if self.stride == 1 else 0, "num_cpus": 0}
        return {"num_gpus": 0, "num_cpus": self.share}


@dataclass
class GroupPlan:
    """One placement group: `count` bundles of `gpus` GPUs each, placed with `strategy`."""

    count: int
    gpus: int
    strategy: str

    def bundle(self, use_gpus: bool) -> dict[str, float]:
        return {"GPU": float(self.gpus), "CPU": float(self.gpus)} if use_gpus else {"CPU": float(self.gpus)}


@dataclass
class PlacementPlan:
    roles: dict[str, RolePlan]
    group_plans: dict[str, GroupPlan]
    use_gpus: bool
    groups: dict[str, Any] = field(default_factory=dict)  # name -> ray PlacementGroup, once placed
    started_ray: bool = False  # this process started Ray, so release() stops it
    in_driver: bool = False  # the roles run in the driver's process, without Ray (plan_in_driver)

    @property
    def bundles(self) -> dict[str, int]:
        """Placement group name -> bundle count."""
        return {name: g.count for name, g in self.group_plans.items()}

    def describe(self) -> str:
        """'actor 2 (2 nodes x 1), ref 2 (colocated with actor)' — what was asked, in the user's terms."""
        out = []
        for plan in self.roles.values():
            owner = next(p.name for p in self.roles.values() if p.group == plan.group)
            shape = f" ({plan.num_nodes} nodes x {plan.gpus_per_node})" if plan.num_nodes > 1 else ""
            out.append(f"{plan.name} {plan.num_workers}{shape}"
                       + (f" (colocated with {owner})" if owner != plan.name else ""))
        return ", ".join(out)

    def total(self) -> dict[str, float]:
        """Resources of every bundle together."""
        out: dict[str, float] = {}
        for g in self.group_plans.values():
            for k, v in g.bundle(self.use_gpus).items():
                out[k] = out.get(k, 0.0) + v * g.count
        return out

    def bundle_shapes(self) -> str:
        """'actor: 2 x {1 CPU} STRICT_SPREAD; ...' for error messages."""
        return "; ".join(f"{name}: {g.count} x {{{_fmt(g.bundle(self.use_gpus))}}} {g.strategy}"
                         for name, g in self.group_plans.items())


def needed_roles(ppo: PPOArgs, placement: PlacementArgs, reward_model: RewardModelArgs,
                 reward_source: RewardSourceArgs) -> list[str]:
    """The roles a run uses: the reference only with a KL term, the critic only for gae, a reward model only with
    --reward-pretrain and no --remote-rm-url (a reward server or reward_func.py, when given, is the reward)."""
    roles = ["actor"]
    if ppo.init_kl_coef > 0:
        roles.append("ref")
    if ppo.advantage_estimator == "gae":
        roles.append("critic")
    if reward_model.reward_pretrain is not None and reward_source.remote_rm_url is None:
        roles.append("reward")
    if placement.vllm_num_engines:
        roles.append("vllm")
    return roles


def role_shape(cfg: PlacementArgs, role: str) -> tuple[int, int]:
    """(nodes, workers per node) a role asks for: one worker per requested GPU; the vLLM engines count as one node
    of --vllm-num-engines workers (each engine's bundle is its own, see plan_roles)."""
    shapes = {"actor": (cfg.actor_num_nodes, cfg.actor_num_gpus_per_node),
              "ref": (cfg.ref_num_nodes, cfg.ref_num_gpus_per_node),
              "critic": (cfg.critic_num_nodes, cfg.critic_num_gpus_per_node),
              "reward": (cfg.reward_num_nodes, cfg.reward_num_gpus_per_node),
              "vllm": (1, cfg.vllm_num_engines or 0)}
    return shapes[role]


def plan_roles(cfg: PlacementArgs, vllm: VLLMArgs, roles: list[str], use_gpus: bool,
               one_node: bool = False) -> PlacementPlan:
    """Workers per role and which roles share bundles, checked against the colocation flags.

    `one_node`: the Ray is a single local node, so a role's --*-num-nodes cannot be spread (PACK instead)."""
    shape = {r: role_shape(cfg, r) for r in roles}
    group_of = {r: r for r in roles}
    if cfg.colocate_all_models:
        group_of = {r: "actor" for r in roles}
    else:
        if cfg.colocate_actor_ref and "ref" in roles:
            group_of["ref"] = "actor"
        if cfg.colocate_critic_reward and "critic" in roles and "reward" in roles:
            group_of["reward"] = "critic"
    count = {r: n * g * (vllm.vllm_tensor_parallel_size if r == "vllm" else 1) for r, (n, g) in shape.items()}
    problems = []
    for role, group in group_of.items():
        if group != role and count[role] != count[group]:
            what = ("--vllm-num-engines x --vllm-tensor-parallel-size" if "vllm" in (role, group)
                    else "--*-num-nodes x --*-num-gpus-per-node")
            problems.append(f"{role} asks for {count[role]} GPUs but is colocated with {group}, which asks for "
                            f"{count[group]}; colocated roles need the same {what}")
    if problems:
        raise ConfigError("\n".join(problems))
    sharing = {g: sum(1 for r in roles if group_of[r] == g) for g in dict.fromkeys(group_of.values())}
    group_plans: dict[str, GroupPlan] = {}
    for g, members in sharing.items():
        nodes, per_node = shape[g]
        if members > 1 or g == "vllm":  # colocated, or engines: one bundle per GPU (N per engine), packed
            group_plans[g] = GroupPlan(count[g], 1, "PACK")
        else:
            group_plans[g] = GroupPlan(nodes, per_node, "STRICT_SPREAD" if nodes > 1 and not one_node else "PACK")
    plans = {r: RolePlan(r, shape[r][0], shape[r][1], group_of[r], 1.0 / sharing[group_of[r]],
                         per_bundle=group_plans[group_of[r]].gpus,
                         stride=vllm.vllm_tensor_parallel_size if r == "vllm" else 1) for r in roles}
    return PlacementPlan(plans, group_plans, use_gpus)


def cluster_address(cfg: PlacementArgs) -> Optional[str]:
    """The Ray cluster to join: --ray-address, else RAY_ADDRESS, else "auto" inside a Ray job (whose supervisor
    sets both); None: start a local Ray."""
    if cfg.ray_address:
        return cfg.ray_address
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    if os.environ.get(JOB_CONFIG_ENV):
        return "auto"
    return None


def why_not_in_driver(cfg: PlacementArgs, roles: list[str], asked: bool = False) -> Optional[str]:
    """Why the roles (all but the vLLM engines) cannot run in the driver's process (None: they can). Unasked
    (auto), only where the run is on this machine alone: no cluster to join."""
    wide = [r for r in roles if r != "vllm" and role_shape(cfg, r) != (1, 1)]
    if wide:
        return f"{', '.join(wide)} asks for more than one worker"
    if local_gpus() > 0:
        return "this machine has GPUs, which Ray gives to the roles one by one"
    if not asked and cluster_address(cfg) is not None:
        return "the run joins a Ray cluster (--ray-address, RAY_ADDRESS or a Ray job)"
    return None


def plan_in_driver(cfg: PlacementArgs, vllm: VLLMArgs, roles: list[str]) -> Optional[PlacementPlan]:
    """The plan for the roles in the driver's process (distributed/in_driver.py), or None for Ray workers:
    --role-workers driver, or auto where the run can (one worker per role, this machine's CPUs, no cluster). vLLM
    engines stay Ray actors (place() them apart: a local Ray, or the cluster with --role-workers driver). Asked for
    where it cannot be, it is refused with the reason."""
    if cfg.role_workers == "ray":
        return None
    why = why_not_in_driver(cfg, roles, asked=cfg.role_workers == "driver")
    if why is not None:
        if cfg.role_workers == "driver":
            raise ConfigError(f"--role-workers driver: the roles cannot run in the driver's process: {why} "
                              "(use --role-workers ray or auto)")
        return None
    plan = plan_roles(cfg, vllm, [r for r in roles if r != "vllm"], use_gpus=False, one_node=True)
    plan.in_driver = True
    return plan


def check_engines_beside_driver(roles: PlacementPlan, engines: PlacementPlan) -> None:
    """Roles in the driver send their weights from this machine's CPU: engines on GPUs would need them on GPUs."""
    if roles.in_driver and engines.use_gpus:
        raise ConfigError("--role-workers driver: the vLLM engines run on the cluster's GPUs, and the roles in the "
                          "driver's process have none to send them weights from (use --role-workers ray or auto)")


def check_reachable(address: str, flag: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast (exit 2) on an address Ray would retry for a minute: a dashboard URL, or nothing listening."""
    if address == "auto":
        return
    if address.startswith(("http://", "https://")):
        raise ConfigError(f"{flag} {address}: that is a dashboard / job-server URL (what `ray job submit --address` "
                          "takes); train-ppo joins the cluster's GCS address, e.g. 10.0.0.1:6379, or runs as a job "
                          "with `ray job submit ... -- python3 -m rlhfctl train-ppo ...`")
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{flag} {address}: expected HOST:PORT (the head node's GCS address, e.g. 10.0.0.1:6379), "
                          "ray://HOST:PORT, or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()  # [::1]:6379 too
    except OSError as exc:
        raise ConfigError(f"{flag} {address}: no Ray cluster answers there ({exc.strerror or exc}; waited up to "
                          f"{timeout:g}s); is the head started (`ray start --head --port {port}`)?") from None


def start_ray(cfg: PlacementArgs, cpu_bundles_needed: int) -> bool:
    """Join the cluster (see cluster_address) or start a local Ray; returns True when this call called ray.init
    (so release() calls ray.shutdown: for a joined cluster that only disconnects).

    A local Ray without GPUs is given at least as many logical CPUs as there are CPU workers, so the seed's GPU
    counts run on a small machine (each worker still uses one torch thread per CPU it owns)."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    common = {"ignore_reinit_error": True, "log_to_driver": True, "logging_level": "warning"}
    address = cluster_address(cfg)
    if address is not None:
        flag = ("--ray-address" if cfg.ray_address else "RAY_ADDRESS" if os.environ.get("RAY_ADDRESS")
                else "the Ray job's cluster")
        check_reachable(address, flag)
        try:
            ray.init(address=address, **common)
        except Exception as exc:  # ConnectionError, RuntimeError, ... depending on what is wrong
            raise ConfigError(f"{flag} {address}: cannot join the Ray cluster: {_first_line(exc)}") from None
        return True
    gpus = local_gpus()
    num_cpus = max(os.cpu_count() or 1, cpu_bundles_needed if gpus == 0 else 0)
    # address="local": a new Ray of this run's own, even where `ray start` left its address file behind (Ray would
    # otherwise try to join that cluster, alive or not); a cluster to join is named by --ray-address or RAY_ADDRESS.
    ray.init(address="local", num_cpus=num_cpus, num_gpus=gpus, include_dashboard=False, **common)
    return True


def local_gpus() -> int:
    """CUDA GPUs on this machine (0 where torch has no CUDA)."""
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def place(cfg: PlacementArgs, vllm: VLLMArgs, roles: list[str]) -> PlacementPlan:
    """Start/join Ray and reserve placement groups for `roles`, or fail within --placement-timeout."""
    import ray
    from ray.util.placement_group import placement_group

    cpu_plan = plan_roles(cfg, vllm, roles, use_gpus=False)
    local = cluster_address(cfg) is None and not ray.is_initialized()
    started = start_ray(cfg, int(cpu_plan.total().get("CPU", 0)))
    have = ray.cluster_resources()
    use_gpus = have.get("GPU", 0) > 0
    nodes = alive_nodes()
    plan = plan_roles(cfg, vllm, roles, use_gpus, one_node=local and len(nodes) == 1)
    plan.started_ray = started
    if not use_gpus:
        asked = sum(p.num_workers for p in plan.roles.values())
        warnings.warn(f"no GPUs in the Ray cluster: the {asked} requested GPU workers ({plan.describe()}) run as "
                      "CPU workers", stacklevel=2)
    spread = [r.name for r in plan.roles.values() if r.num_nodes > 1 and plan.group_plans[r.group].strategy == "PACK"]
    if spread and local:
        warnings.warn(f"the local Ray is one node: {', '.join(spread)} asked for several nodes and share this one "
                      "(join a cluster with --ray-address to spread them)", stacklevel=2)
    for name, gp in plan.group_plans.items():
        plan.groups[name] = placement_group([gp.bundle(use_gpus)] * gp.count, strategy=gp.strategy,
                                            name=f"rlhfctl-{name}-{os.getpid()}")
    ready, _ = ray.wait([pg.ready() for pg in plan.groups.values()], num_returns=len(plan.groups),
                        timeout=cfg.placement_timeout)
    if len(ready) < len(plan.groups):
        available = ray.available_resources()
        release(plan)
        raise PlacementError(
            f"the Ray cluster could not place the roles within {cfg.placement_timeout:g}s (--placement-timeout): "
            f"asked for {plan.describe()} = {_fmt(plan.total())} in bundles {plan.bundle_shapes()}; the cluster has "
            f"{_fmt(have)} ({_fmt(available)} free) on {len(nodes)} node(s): {describe_nodes(nodes)}"
        )
    return plan


def alive_nodes() -> list[dict[str, Any]]:
    """ray.nodes() entries of the nodes that are alive."""
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def describe_nodes(nodes: list[dict[str, Any]]) -> str:
    """'10.0.0.1 (ab12cd34: 8 GPU, 64 CPU), ...'."""
    return ", ".join(f"{n.get('NodeManagerAddress')} ({n['NodeID'][:8]}: {_fmt(n.get('Resources', {}))})"
                     for n in nodes)


def bundle_nodes(plan: PlacementPlan) -> dict[str, list[str]]:
    """Placement group name -> the node id of each of its bundles, as Ray placed them."""
    from ray.util.placement_group import placement_group_table

    out = {}
    for name, pg in plan.groups.items():
        table = placement_group_table(pg)
        by_index = table.get("bundles_to_node_id", {})
        out[name] = [by_index.get(i, "") for i in range(plan.group_plans[name].count)]
    return out


def _fmt(resources: dict[str, float]) -> str:
    keys = [k for k in ("GPU", "CPU") if k in resources] or list(resources)[:2]
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in keys) or "nothing"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def release(plan: PlacementPlan) -> None:
    """Give the placement groups back, and disconnect from (or stop, if local) the Ray this process started."""
    if plan.in_driver:
        return
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
