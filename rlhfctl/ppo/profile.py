"""--profile: where a PPO step's time goes, per role and per phase, in metrics.jsonl.

Every worker times its own method calls (distributed/busy.py); after a step the profiler reads them back and logs
`profile/<role>/<method>`: the busiest worker's seconds in that method during the step (its compute, with the
tokenization inside it also logged as `profile/<role>/tokenize`). A phase's wall time as the driver saw it
(time/generate, time/weight_sync, time/make_experience + time/reward, time/train) minus the compute of its busiest
worker is `profile/overhead/<phase>`: Ray calls, serialization and waiting that are not compute. Reading the
workers back costs one Ray call per worker before and after each step, which is why it is an option."""

from __future__ import annotations

from typing import Any

from rlhfctl.distributed.roles import RoleGroup, get

# The worker methods whose compute makes each phase (the methods the driver calls in it).
PHASE_METHODS: dict[str, tuple[str, ...]] = {
    "generate": ("generate", "generate_samples"),
    "experience": ("log_probs", "values", "score"),
    "train": ("train",),
    "weight_sync": ("broadcast_weights", "receive_weights", "send_weights_ray", "push_weights"),
}


def phase_walls(timings: dict[str, float]) -> dict[str, float]:
    """Each phase's seconds as the driver saw it; the forwards of the experience run while the reward is scored."""
    walls = {"generate": timings.get("time/generate"), "train": timings.get("time/train"),
             "weight_sync": timings.get("time/weight_sync")}
    if "time/make_experience" in timings:
        walls["experience"] = timings["time/make_experience"] + timings.get("time/reward", 0.0)
    return {phase: seconds for phase, seconds in walls.items() if seconds is not None}


def busiest(per_worker: list[dict[str, float]]) -> dict[str, float]:
    """Per method, the most seconds any one worker of a role spent in it (the role's critical path)."""
    out: dict[str, float] = {}
    for seconds in per_worker:
        for method, s in seconds.items():
            out[method] = max(out.get(method, 0.0), s)
    return out


def step_profile(timings: dict[str, float], compute: dict[str, dict[str, float]]) -> dict[str, float]:
    """profile/<role>/<method> from each role's busiest-worker seconds, and profile/overhead/<phase>: the phase's
    wall time minus its busiest compute (the reward scored in the driver counts as the experience's compute)."""
    out = {f"profile/{role}/{method}": s for role, methods in compute.items() for method, s in methods.items()}
    for phase, wall in phase_walls(timings).items():
        busy = [s for methods in compute.values() for m, s in methods.items() if m in PHASE_METHODS[phase]]
        if phase == "experience":
            busy.append(timings.get("time/reward", 0.0))
        out[f"profile/overhead/{phase}"] = max(0.0, wall - max(busy, default=0.0))
    return out


class StepProfiler:
    """Reads every role's compute seconds around a step (the actor, ref, critic, reward and vLLM engine groups)."""

    def __init__(self, groups: dict[str, RoleGroup[Any]]) -> None:
        self.groups = groups

    def _read(self) -> dict[str, dict[str, float]]:
        futures = {role: group.busy_seconds() for role, group in self.groups.items()}
        return {role: busiest(get(f)) for role, f in futures.items()}

    def start(self) -> None:
        """Forget what the workers did before this step (start-up, the previous step's evaluation)."""
        self._read()

    def finish(self, timings: dict[str, float]) -> dict[str, float]:
        return step_profile(timings, self._read())
