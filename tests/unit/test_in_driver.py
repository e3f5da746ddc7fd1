"""Roles in the driver's process (distributed/in_driver.py): when a run gets them, and that a worker there behaves as
a Ray worker does for the loop: results and errors through `get`, one call at a time, its own --profile timings, and
a Ctrl-C that lets the call finish. (A whole run in the driver against the same run on Ray workers:
tests/e2e/test_train_ppo_resume.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from rlhfctl.config import PlacementArgs, VLLMArgs
from rlhfctl.distributed import busy
from rlhfctl.distributed.in_driver import DriverRoleGroup, start_role
from rlhfctl.distributed.placement import check_engines_beside_driver, plan_in_driver
from rlhfctl.distributed.roles import RoleGroup, get
from rlhfctl.errors import ConfigError, WorkerError
from tests.helpers import ENV, ROOT, run_cli


class Counter:
    """A stand-in worker: what matters here is the host around it, not a model."""

    def __init__(self, start: int) -> None:
        self.value = int(start)
        self.halves: list[str] = []

    def add(self, n: int) -> int:
        with busy.timed("adding"):
            self.value += n
        return self.value

    def interrupted_midway(self) -> list[str]:
        """Half the work, a Ctrl-C at this process, the other half."""
        self.halves.append("first")
        os.kill(os.getpid(), signal.SIGINT)
        self.halves.append("second")
        return list(self.halves)

    def fail(self, kind: str) -> None:
        if kind == "ours":
            raise ConfigError("--critic-pretrain x: no such folder")
        raise ValueError("shapes do not match\nsecond line")


class Other:
    def __init__(self) -> None:
        pass

    def add(self, n: int) -> int:
        return n


@pytest.fixture
def no_cluster(monkeypatch):
    for name in ("RAY_ADDRESS", "RAY_JOB_CONFIG_JSON_ENV_VAR"):
        monkeypatch.delenv(name, raising=False)


def plan(roles=("actor", "ref"), **placement):
    return plan_in_driver(PlacementArgs(**placement), VLLMArgs(), list(roles))


def test_auto_runs_one_worker_per_role_on_this_machine_in_the_driver(no_cluster, monkeypatch):
    assert plan().in_driver and plan(role_workers="driver").in_driver
    assert plan(role_workers="ray") is None
    assert plan(actor_num_gpus_per_node=2) is None
    with_engines = plan(["actor", "vllm"], vllm_num_engines=2)  # the engines stay Ray actors: placed apart
    assert with_engines.in_driver and set(with_engines.roles) == {"actor"}
    assert plan(ray_address="10.0.0.1:6379") is None  # a cluster: Ray workers, unless asked
    assert plan(ray_address="10.0.0.1:6379", role_workers="driver").in_driver  # the engines on the cluster
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert plan() is None


@pytest.mark.parametrize("placement, why", [
    ({"actor_num_gpus_per_node": 2}, "actor asks for more than one worker"),
    ({"ref_num_nodes": 2}, "ref asks for more than one worker"),
])
def test_asking_for_the_driver_where_it_cannot_be_says_why(no_cluster, placement, why):
    with pytest.raises(ConfigError, match="--role-workers driver: the roles cannot run in the driver's process") as e:
        plan(role_workers="driver", **placement)
    assert why in str(e.value)


def test_roles_in_the_driver_cannot_send_weights_to_engines_on_gpus(no_cluster):
    roles, engines = plan(), plan(["actor"], role_workers="driver")
    check_engines_beside_driver(roles, engines)  # both on CPUs
    engines.use_gpus = True
    with pytest.raises(ConfigError, match="the vLLM engines run on the cluster's GPUs"):
        check_engines_beside_driver(roles, engines)


def test_a_driver_worker_answers_through_get_one_call_at_a_time(no_cluster):
    group = start_role("actor", plan(), Counter, 10).wait_ready()
    assert isinstance(group, DriverRoleGroup) and isinstance(group, RoleGroup) and len(group) == 1
    futures = [group.on(0, Counter.add, 1), group.on(0, Counter.add, 2)]
    assert get(futures) == [11, 13] and get(group.all(Counter.add, 0)) == [13]
    with pytest.raises(TypeError, match="is not a method of the actor workers"):
        group.on(0, Other.add, 1)


def test_errors_read_as_they_do_from_a_ray_worker(no_cluster):
    group = start_role("ref", plan(), Counter, 0).wait_ready()
    future = group.on(0, Counter.fail, "theirs")  # raised when the result is asked for, as ray.get raises
    with pytest.raises(WorkerError) as caught:
        get(future)
    assert str(caught.value) == "ref worker 0 failed (fail): ValueError: shapes do not match (more with --debug)"
    assert "Traceback" in caught.value.remote_traceback
    with pytest.raises(ConfigError, match="no such folder"):  # our own errors stay themselves
        get(group.on(0, Counter.fail, "ours"))
    with pytest.raises(WorkerError, match=r"^ref worker 0 failed \(starting\): ValueError: invalid literal"):
        start_role("ref", plan(), Counter, "not a number").wait_ready()


def test_each_role_keeps_its_own_profile_timings(no_cluster):
    actor = start_role("actor", plan(), Counter, 0).wait_ready()
    ref = start_role("ref", plan(), Counter, 0).wait_ready()
    get(actor.busy_seconds()), get(ref.busy_seconds())
    get(actor.on(0, Counter.add, 1))
    actor_seconds, ref_seconds = get(actor.busy_seconds()), get(ref.busy_seconds())
    assert set(actor_seconds[0]) == {"add", "adding"} and ref_seconds == [{}]
    assert "add" not in busy.take()  # nothing leaked into the process's own table


def test_a_ctrl_c_during_a_call_lets_it_finish_and_is_raised_by_get(no_cluster):
    group = start_role("actor", plan(), Counter, 0).wait_ready()
    future = group.on(0, Counter.interrupted_midway)  # the SIGINT came in the middle: the call still ran whole
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        get([future])
    assert get(future) == ["first", "second"]  # raised once; the result is there for the interrupted loop's save
    with pytest.raises(KeyboardInterrupt):  # outside a call, Ctrl-C is immediate again
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)


def test_roles_in_the_driver_never_import_ray():
    code = textwrap.dedent("""
        import sys
        from rlhfctl.config import PlacementArgs, VLLMArgs
        from rlhfctl.distributed.in_driver import start_role
        from rlhfctl.distributed.placement import plan_in_driver, release
        from rlhfctl.distributed.roles import get
        from tests.unit.test_in_driver import Counter

        plan = plan_in_driver(PlacementArgs(), VLLMArgs(), ["actor"])
        group = start_role("actor", plan, Counter, 1).wait_ready()
        assert get(group.on(0, Counter.add, 1)) == 2 and get([]) == [] and get(group.busy_seconds())[0]
        release(plan)
        print("ray" in sys.modules)
    """)
    env = {k: v for k, v in ENV.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "False"


def test_a_bad_role_workers_value_exits_2_naming_the_choices(capsys):
    code, _, err = run_cli(["train-ppo", "--pretrain", "p", "--prompt-data", "d.jsonl", "--remote-rm-url",
                            "http://h/get_reward", "--role-workers", "gpu"], capsys)
    assert code == 2 and "--role-workers: Input should be 'auto', 'ray' or 'driver' (got 'gpu')" in err
