"""The benchmarks that README figures come from: they start, refuse bad options, and say what they lack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

BENCHMARKS = ROOT / "benchmarks"
sys.path.append(str(BENCHMARKS))  # last: benchmarks/demo.py must not shadow examples/arithmetic/demo.py

import train_ppo  # noqa: E402
import trl_grpo  # noqa: E402


def _run(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=BENCHMARKS.parent)


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_every_benchmark_has_help(script):
    done = _run(script, "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


@pytest.mark.parametrize("script, args", [
    ("trl_grpo.py", ["--steps", "1"]),
    ("trl_grpo.py", ["--threads", "0"]),
    ("client_cpu.py", ["--requests", "0"]),
    ("arithmetic_models.py", ["--check-plateau", "-1"]),
    ("demo.py", ["--variant", "nope"]),
    ("reward_cache.py", ["--prompts", "50"]),
    ("sandbox.py", ["--workers", "0"]),
    ("lora.py", ["--steps", "1"]),
    ("engine_start.py", ["--repeats", "0"]),
    ("partial_rollout.py", ["--steps", "2"]),
])
def test_bad_options_exit_2_with_a_message(script, args):
    done = _run(script, *args)
    assert done.returncode == 2
    assert "error:" in done.stderr and "Traceback" not in done.stderr


def test_trl_benchmark_without_trl_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(trl_grpo, "trl_version", lambda: None)
    assert trl_grpo.main(["--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "optional benchmark dependency" in err and 'pip install -e ".[bench]"' in err


def test_trl_reward_is_train_ppo_reward():
    """The two benchmarks score a completion the same way: train_ppo.py's reward_func on prompt + completion."""
    reward = trl_grpo.reward_for_trl()
    assert reward(prompts=["Q: ", "Q: "], completions=["eeee", "abcd"]) == [1.0, 0.0]


def test_weight_sync_is_null_with_a_reason_without_vllm_and_measured_with_it():
    none = train_ppo.weight_sync([{"time/step": 1.0}, {"time/step": 1.0}])
    assert none["time_weight_sync_s"] is None and "no vLLM" in none["time_weight_sync_note"]
    logged = train_ppo.weight_sync([{"time/weight_sync": 0.2}, {"time/weight_sync": 0.4}])
    assert logged == {"time_weight_sync_s": 0.3}


@pytest.mark.slow
def test_client_cpu_measures_both_clients_on_one_endpoint():
    done = _run("client_cpu.py", "--requests", "200", "--repeats", "1", "--concurrency", "4")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["failed"] == {"loadgen": 0, "httpx": 0}
    cpu = result["cpu_us_per_request"]
    assert 0 < cpu["loadgen"] < cpu["httpx"], cpu  # the load generator exists because httpx costs more CPU


def test_the_ppo_benchmark_compares_each_tensor_parallel_size_with_the_first():
    def row(rollout, tp, generate, sync):
        return {"rollout": rollout, "vllm_tensor_parallel_size": tp, "vllm_engines": 2, "time_generate_s": generate,
                "time_weight_sync_s": sync, "completions_per_s": 10.0 / generate, "rollout_logprob_diff_max": 1e-5}

    lines = train_ppo.comparisons("a", [row("hf", 1, 4.0, None), row("vllm", 1, 2.0, 0.1), row("vllm", 2, 1.0, 0.3)])
    assert [line["comparison"] for line in lines] == ["vllm vs hf", "vllm tp2 vs tp1"]
    assert lines[0]["generate_speedup"] == 2.0
    assert lines[1]["time_weight_sync_s"] == {"tp1": 0.1, "tp2": 0.3} and lines[1]["generate_speedup"] == 2.0
