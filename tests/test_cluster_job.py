"""The seed's form, `ray job submit --address http://HEAD:8265 --runtime-env-json '{"working_dir": "."}' --
python3 -m rlhfctl train-ppo ...`, against a local cluster's job server; logs and exit status read back with
`ray job logs` / `ray job status`.

The job server lives in the head's dashboard, which needs ray[default]'s packages (aiohttp_cors, opencensus,
opentelemetry-exporter-prometheus, ...); where they are missing (this project's CI venv: plain `ray`) `ray start
--include-dashboard true` refuses ("Cannot include dashboard with missing packages"), so these tests skip, naming
the import that failed. tests/test_cluster.py runs train-ppo the way the job supervisor runs an entrypoint
(RAY_ADDRESS + RAY_JOB_CONFIG_JSON_ENV_VAR, the `rlhfctl` script), which is the part of a job that is rlhfctl's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ray_cluster import RAY, cluster_env, start_cluster

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


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
    started = start_cluster([("node_head", 0), ("node_a", 2)], dashboard=True)
    yield started
    started.stop()


def submit(cluster, entrypoint: list[str], cwd: Path) -> subprocess.CompletedProcess:
    runtime_env = {"working_dir": ".", "excludes": [".git", ".venv", "*.safetensors.tmp"],
                   "env_vars": {"HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}}
    return subprocess.run([RAY, "job", "submit", "--address", cluster.dashboard_url, "--runtime-env-json",
                           json.dumps(runtime_env), "--", *entrypoint], cwd=cwd, env=cluster_env(),
                          capture_output=True, text=True, timeout=400)


def job_id(output: str) -> str:
    return next(w.strip("'") for w in output.split() if w.strip("'").startswith("raysubmit_"))


@pytest.mark.parametrize("entrypoint", [["python3", "-m", "rlhfctl"], ["rlhfctl"]])
def test_ray_job_submit_runs_train_ppo_and_reports_its_metrics(entrypoint, job_cluster, tiny_policy_dir,
                                                               prompt_file, tmp_path):
    work = tmp_path / "repo"  # the working dir uploaded to the cluster: this checkout's package
    shutil.copytree(ROOT / "rlhfctl", work / "rlhfctl", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "reward_func.py").write_text("def reward_func(q, p, l, **k):\n    return [float(len(x) % 3) for x in q]\n")
    out = tmp_path / "out"
    done = submit(job_cluster, [*entrypoint, "train-ppo", "--pretrain", str(tiny_policy_dir), "--prompt-data",
                                str(prompt_file), "--input-key", "input", "--label-key", "answer", "--remote-rm-url",
                                "reward_func.py", "--save-path", str(out), "--rollout-batch-size", "2",
                                "--n-samples-per-prompt", "2", "--micro-rollout-batch-size", "1",
                                "--train-batch-size", "4", "--micro-train-batch-size", "2", "--generate-max-len", "4",
                                "--max-samples", "4", "--advantage-estimator", "group_norm", "--engine", "torch"],
                  work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    job = job_id(done.stdout + done.stderr)
    status = subprocess.run([RAY, "job", "status", "--address", job_cluster.dashboard_url, job], env=cluster_env(),
                            capture_output=True, text=True, timeout=60)
    assert "SUCCEEDED" in status.stdout + status.stderr
    logs = subprocess.run([RAY, "job", "logs", "--address", job_cluster.dashboard_url, job], env=cluster_env(),
                          capture_output=True, text=True, timeout=60).stdout
    assert "step 2/2" in logs and f"saved the policy in {out}" in logs
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_a_failing_job_reports_failed_with_the_message(job_cluster, tmp_path):
    done = submit(job_cluster, ["rlhfctl", "train-ppo", "--pretrain", str(tmp_path / "missing"), "--prompt-data",
                                "p.jsonl", "--remote-rm-url", "r.py"], tmp_path)
    status = subprocess.run([RAY, "job", "status", "--address", job_cluster.dashboard_url,
                             job_id(done.stdout + done.stderr)], env=cluster_env(), capture_output=True, text=True,
                            timeout=60)
    assert "FAILED" in status.stdout + status.stderr
    assert "Error: " in done.stdout + done.stderr and "Traceback" not in done.stdout + done.stderr
