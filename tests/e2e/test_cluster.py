"""train-ppo on a real multi-node Ray cluster: a head and a worker started by `ray start` as separate processes on
this machine (tests/ray_cluster.py), told apart by custom resources; tiny models, 1-2 steps.

The head holds no CPU (it runs the GCS, as a cluster's head often does); node_a and node_b one each, so the actor's
and the reference model's one-CPU bundles must land on different nodes. The test checks that each worker reports
the node Ray placed its bundle on, loses the reference model's node mid-run, and resumes on the node left.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.helpers.ray_cluster import cluster_env, start_cluster
from tests.helpers.train_ppo import metrics


pytestmark = pytest.mark.slow

# Slow enough (1 s per reward call) that node_b can be stopped while the run is still going.
SLOW_REWARD = '''
import time

def reward_func(queries, prompts, labels, **kwargs):
    time.sleep(1.0)
    return [float(len(q) % 3) for q in queries]
'''


@pytest.fixture(scope="module")
def cluster():
    started = start_cluster([("node_head", 0), ("node_a", 1), ("node_b", 1)])
    yield started
    started.stop()


def run_args(policy: Path, prompts: Path, out: Path, reward: Path) -> list[str]:
    return ["--pretrain", str(policy), "--prompt-data", str(prompts), "--input-key", "input", "--label-key", "answer",
            "--remote-rm-url", str(reward), "--save-path", str(out), "--ckpt-path", str(out / "ckpt"),
            "--rollout-batch-size", "2", "--n-samples-per-prompt", "2", "--micro-rollout-batch-size", "1",
            "--train-batch-size", "4", "--micro-train-batch-size", "2", "--generate-max-len", "4",
            "--prompt-max-len", "64", "--max-samples", "4", "--advantage-estimator", "group_norm",
            "--init-kl-coef", "0.01", "--engine", "torch", "--placement-timeout", "60"]


def as_ray_job_env(address: str) -> dict[str, str]:
    """What `ray job submit`'s supervisor gives its entrypoint: the cluster's GCS address in RAY_ADDRESS and the
    job's config (runtime_env, metadata) in RAY_JOB_CONFIG_JSON_ENV_VAR."""
    return {**cluster_env(), "RAY_ADDRESS": address,
            "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"runtime_env": {}, "metadata": {}})}


def worker_nodes(out: Path) -> dict[str, list[str]]:
    """Role -> the node id each of its workers reported (placement.json)."""
    report = json.loads((out / "placement.json").read_text())
    return {role: [w["node_id"] for w in r["workers"]] for role, r in report["roles"].items()}


def test_a_placement_the_cluster_cannot_hold_fails_in_time_naming_ask_and_cluster(cluster, tiny_policy_dir,
                                                                                  prompt_file, tmp_path, capsys,
                                                                                  monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # as the cluster was started (Ray 2.60 defaults to tokens)
    (tmp_path / "r.py").write_text("def reward_func(q, p, l, **k):\n    return [0.0] * len(q)\n")
    started = time.time()
    code, _, err = run_cli(["train-ppo", *run_args(tiny_policy_dir, prompt_file, tmp_path, tmp_path / "r.py"),
                             "--ray-address", cluster.address, "--ref-num-nodes", "4", "--placement-timeout", "3"],
                            capsys)
    message = " ".join(err.split())
    assert code == 1, err[-3000:]
    assert "could not place the roles within 3s (--placement-timeout)" in message
    assert "ref 4 (4 nodes x 1)" in message and "ref: 4 x {1 CPU} STRICT_SPREAD" in message
    assert "the cluster has 2 CPU" in message and "on 3 node(s)" in message
    assert time.time() - started < 60 and "Traceback" not in err


def test_roles_run_where_the_plan_says_and_a_lost_node_stops_with_a_checkpoint_then_resume_completes(
        cluster, tiny_policy_dir, prompt_file, tmp_path, capsys, monkeypatch):
    name_of = {n.node_id: n.name for n in cluster.nodes}
    reward = tmp_path / "reward_func.py"
    reward.write_text(SLOW_REWARD)
    out = tmp_path / "run"
    # Started as a Ray job's entrypoint is (the `rlhfctl` script, RAY_ADDRESS, no --ray-address): it must join this
    # cluster, not start a Ray of its own (whose node would be neither node_a nor node_b).
    run = subprocess.Popen([str(Path(sys.executable).with_name("rlhfctl")), "train-ppo",
                            *run_args(tiny_policy_dir, prompt_file, out, reward), "--num-episodes", "20"],
                           env=as_ray_job_env(cluster.address), cwd=tmp_path, stdout=(tmp_path / "log").open("w"),
                           stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 150
        while not metrics(out) and run.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert metrics(out), f"no step completed:\n{(tmp_path / 'log').read_text()[-3000:]}"
        placed = worker_nodes(out)
        report = json.loads((out / "placement.json").read_text())
        for role in ("actor", "ref"):  # each worker runs on the node Ray placed its bundle on
            assert placed[role] == report["groups"][role]["bundle_nodes"]
        actor_node, ref_node = placed["actor"][0], placed["ref"][0]
        assert {name_of[actor_node], name_of[ref_node]} == {"node_a", "node_b"}  # one role on each node

        cluster.kill_node(name_of[ref_node])
        run.wait(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    log = (tmp_path / "log").read_text()
    assert run.returncode == 1, log[-3000:]
    assert "placement: actor 0 on" in log and f"({actor_node[:8]}); ref 0 on" in log
    last = metrics(out)[-1]["step"]
    error = " ".join(log[log.index("Error:"):].split())
    assert "lost the ref worker 0 on node" in error and f"({ref_node[:8]}): its node left the cluster" in error
    assert f"Checkpoint of step {last}, the last completed step, saved in {out / 'ckpt' / f'global_step{last}'}" \
        in error
    assert "Traceback" not in log

    # On the one CPU left: the reference model colocated with the actor (sharing its bundle) fits.
    reward.write_text(SLOW_REWARD.replace("time.sleep(1.0)", "pass"))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    code, _, err = run_cli(["train-ppo", *run_args(tiny_policy_dir, prompt_file, out, reward), "--ray-address",
                             cluster.address, "--load-checkpoint", "--num-episodes", str(last // 2 + 1),
                             "--colocate-actor-ref"], capsys)  # in this process: saves a Python start
    assert code == 0, err[-3000:]
    assert f"resumed from {out / 'ckpt' / f'global_step{last}'} at step {last}" in err
    steps = [m["step"] for m in metrics(out)]
    assert steps == list(range(1, steps[-1] + 1)) and steps[-1] > last
    assert worker_nodes(out) == {"actor": [actor_node], "ref": [actor_node]}


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("where", ["flag", "env"])
def test_an_address_where_no_cluster_answers_exits_2_at_once(where, tiny_policy_dir, prompt_file, tmp_path,
                                                              capsys, monkeypatch):
    from rlhfctl.net import free_port

    reward = tmp_path / "r.py"
    reward.write_text("def reward_func(q, p, l, **k):\n    return [0.0] * len(q)\n")
    address = f"127.0.0.1:{free_port()}"
    args = ["train-ppo", *run_args(tiny_policy_dir, prompt_file, tmp_path / "out", reward)]
    if where == "flag":
        args += ["--ray-address", address]
    else:
        monkeypatch.setenv("RAY_ADDRESS", address)
    started = time.time()
    code, _, err = run_cli(args, capsys)
    assert code == 2
    flag = "--ray-address" if where == "flag" else "RAY_ADDRESS"
    assert f"{flag} {address}: no Ray cluster answers there" in " ".join(err.split())
    assert time.time() - started < 30


@pytest.mark.parametrize("address, expected", [
    ("http://127.0.0.1:8265", "that is a dashboard / job-server URL"),
    ("headnode", "expected HOST:PORT"),
])
def test_a_malformed_ray_address_exits_2_naming_the_form(address, expected, tiny_policy_dir, prompt_file, tmp_path,
                                                          capsys):
    reward = tmp_path / "r.py"
    reward.write_text("def reward_func(q, p, l, **k):\n    return [0.0] * len(q)\n")
    code, _, err = run_cli(["train-ppo", *run_args(tiny_policy_dir, prompt_file, tmp_path / "out", reward),
                             "--ray-address", address], capsys)
    assert code == 2 and f"--ray-address {address}: {expected}" in " ".join(err.split())


def test_the_cluster_to_join_flag_then_ray_address_then_the_job(monkeypatch):
    from types import SimpleNamespace

    from rlhfctl.distributed.placement import JOB_CONFIG_ENV, cluster_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(JOB_CONFIG_ENV, raising=False)
    assert cluster_address(SimpleNamespace(ray_address=None)) is None  # a local Ray
    monkeypatch.setenv(JOB_CONFIG_ENV, "{}")  # inside a Ray job whose RAY_ADDRESS was cleared: still its cluster
    assert cluster_address(SimpleNamespace(ray_address=None)) == "auto"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert cluster_address(SimpleNamespace(ray_address=None)) == "10.0.0.1:6379"
    assert cluster_address(SimpleNamespace(ray_address="10.0.0.9:6379")) == "10.0.0.9:6379"


def test_a_lost_actor_worker_names_the_newest_checkpoint_instead_of_saving(tmp_path):
    """The actor's state on the lost node is gone (and its peers wait on it in collectives): nothing is saved, the
    message names the lost worker and the newest complete checkpoint."""
    from rlhfctl.distributed.roles import WorkerLost, WorkerPlace
    from rlhfctl.ppo.checkpoint import CheckpointManager, TrainerState
    from rlhfctl.ppo.failures import Failures

    checkpoints = CheckpointManager(str(tmp_path / "ckpt"), max_ckpt_num=3)
    checkpoints.finish(checkpoints.begin(4), TrainerState(step=4))
    failures = Failures(TrainerState(step=5), save=lambda: pytest.fail("saved a checkpoint"), checkpoints=checkpoints,
                        tracker=None, skip_nonfinite_batches=False, trained_roles={"actor"})
    place = WorkerPlace("actor", 1, 0, "8d41e0aa" + "0" * 48, "10.0.0.3")
    lost = failures.worker_lost(WorkerLost(f"lost the {place.describe()}: its node left the cluster", place, True))
    message = str(lost)
    assert message.startswith("lost the actor worker 1 on node 10.0.0.3 (8d41e0aa): its node left the cluster; the "
                              "run stops during step 6. The actor worker's state went with it")
    assert f"the newest checkpoint is {tmp_path / 'ckpt' / 'global_step4'}" in message
    assert [s for s, _ in checkpoints.complete()] == [4]  # nothing new written
