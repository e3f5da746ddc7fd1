"""The seed's form, `ray job submit --address http://HEAD:8265 --runtime-env-json '{"working_dir": "."}' --
python3 -m rlhfctl train-ppo ...` (and `-- rlhfctl train-ppo ...`), against a local cluster's job server; logs and
exit status read back with `ray job logs` / `ray job status`. One cluster for the module (its start is most of the
time); one-step runs of a tiny model.

The job server lives in the head's dashboard, which needs ray[default] (the `train` extra); with plain `ray`,
`ray start --include-dashboard true` refuses, so these tests skip, naming the import that failed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.ray_cluster import RAY, cluster_env, start_cluster


pytestmark = pytest.mark.slow



def _dashboard_missing() -> str:
    try:
        import ray.dashboard.optional_deps  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return ""


if _dashboard_missing():
    pytest.skip(f"no Ray job server here: the dashboard needs ray[default] ({_dashboard_missing()})",
                allow_module_level=True)


@pytest.fixture(scope="module")
def job_cluster():
    """One head (no CPU: the job's driver runs there) and one 2-CPU worker for the roles, shared by the module;
    returned once its job server takes jobs."""
    started = start_cluster([("node_head", 0), ("node_a", 2)], dashboard=True)
    yield started
    started.stop()


def submit(cluster, entrypoint: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`ray job submit` of `entrypoint` with `cwd` as the working_dir, waiting for the job to end (it tails the
    job's log)."""
    runtime_env = {"working_dir": ".", "excludes": [".git"],
                   "env_vars": {"HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}}
    return subprocess.run([RAY, "job", "submit", "--address", cluster.dashboard_url, "--runtime-env-json",
                           json.dumps(runtime_env), "--", *entrypoint], cwd=cwd, env=cluster_env(),
                          capture_output=True, text=True, timeout=400, check=False)


def job_id(output: str) -> str:
    """The job id that `ray job submit` printed."""
    return next(w.strip("'") for w in output.split() if w.strip("'").startswith("raysubmit_"))


def job(cluster, command: str, submitted: str) -> str:
    """The output of `ray job <command>` (status, logs) for the job `submitted`, colours off."""
    done = subprocess.run([RAY, "job", command, "--address", cluster.dashboard_url, submitted],
                          env={**cluster_env(), "NO_COLOR": "1"}, capture_output=True, text=True, timeout=60,
                          check=False)
    return re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)


def unpacked_working_dir(cluster, output: str) -> Path:
    """The working_dir package named in `ray job submit`'s `output` (uploaded, or found there already: same content,
    same name), as the head unpacked it: the job's working directory there."""
    [package] = set(re.findall(r"gcs://(_ray_pkg_[0-9a-f]+)\.zip", output))
    return cluster.temp_dir / "session_latest" / "runtime_resources" / "working_dir_files" / package


def test_ray_job_submit_runs_train_ppo_and_reports_its_metrics(job_cluster, tiny_policy_dir, prompt_file, tmp_path):
    """The seed's `-- python3 -m rlhfctl train-ppo` form trains; the `-- rlhfctl` script form is the failing job's
    below (one training job is enough to show the cluster side)."""
    entrypoint = ["python3", "-m", "rlhfctl"]
    # The working dir uploaded to the cluster: a checkout (this package, its .gitignore) with a virtualenv in it,
    # which Ray (.venv by default since 2.5x) and the .gitignore keep out of the upload.
    work = tmp_path / "repo"
    shutil.copytree(ROOT / "rlhfctl", work / "rlhfctl", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".gitignore", work / ".gitignore")
    (work / ".venv" / "lib").mkdir(parents=True)
    (work / ".venv" / "lib" / "libbig.so").write_bytes(os.urandom(8 << 20))
    (work / "reward_func.py").write_text("def reward_func(q, p, l, **k):\n    return [float(len(x) % 3) for x in q]\n")
    out = tmp_path / "out"
    # The actor alone on the worker node (group_norm, --init-kl-coef 0, --engine torch: no critic, reference or
    # DeepSpeed start): its checkpoint part, written there, is the cluster side this test is about.
    done = submit(job_cluster, [*entrypoint, "train-ppo", "--pretrain", str(tiny_policy_dir), "--prompt-data",
                                str(prompt_file), "--input-key", "input", "--label-key", "answer", "--remote-rm-url",
                                "reward_func.py", "--save-path", str(out), "--rollout-batch-size", "2",
                                "--n-samples-per-prompt", "2", "--micro-rollout-batch-size", "1",
                                "--train-batch-size", "4", "--micro-train-batch-size", "2", "--generate-max-len", "4",
                                "--max-samples", "2", "--advantage-estimator", "group_norm", "--engine", "torch",
                                "--init-kl-coef", "0", "--save-steps", "1"],
                  work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    submitted = job_id(done.stdout + done.stderr)
    assert f"Job '{submitted}' succeeded" in job(job_cluster, "status", submitted)
    logs = job(job_cluster, "logs", submitted)
    assert "step 1/1" in logs and f"saved the policy in {out}" in logs
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    package = unpacked_working_dir(job_cluster, done.stdout + done.stderr)
    assert (package / "rlhfctl" / "__main__.py").is_file() and (package / "reward_func.py").is_file()
    assert not (package / ".venv").exists()
    uploaded = [f for f in package.rglob("*") if f.is_file() and "ckpt" not in f.relative_to(package).parts]
    assert sum(f.stat().st_size for f in uploaded) < 4 << 20
    # The default --ckpt-path is relative: the driver's (here, in the working dir) and not each worker's own, so
    # the actor's part, written on the other node, is in the one checkpoint.
    checkpoint = package / "ckpt" / "checkpoints_ppo_ray" / "global_step1"
    assert (checkpoint / "trainer_state.json").is_file() and any((checkpoint / "actor").iterdir())


def test_a_failing_job_reports_failed_with_the_message(job_cluster, tmp_path):
    missing = tmp_path / "missing"
    done = submit(job_cluster, ["rlhfctl", "train-ppo", "--pretrain", str(missing), "--prompt-data", "p.jsonl",
                                "--remote-rm-url", "r.py"], tmp_path)
    assert done.returncode != 0
    submitted = job_id(done.stdout + done.stderr)
    status, logs = job(job_cluster, "status", submitted), job(job_cluster, "logs", submitted)
    assert f"Job '{submitted}' failed" in status and "failed with exit code 2" in status
    for text in (status, logs):
        assert "Error: " in text and str(missing) in text and "Traceback" not in text
