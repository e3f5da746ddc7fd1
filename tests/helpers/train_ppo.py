"""train-ppo end to end: a small run's arguments, the run in a process of its own, and what it wrote (metrics, models)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.helpers.cli import run_rlhfctl
from tests.helpers.forked import ForkedRun

# A reward_func.py that checks the labels reached it and rewards the share of "e" in a response.
REWARD_WITH_LABELS = '''
ANSWERS = {"5", "6", "42", "18", "99", "9"}

def reward_func(queries, prompts, labels, **kwargs):
    for label in labels:
        if label not in ANSWERS:
            raise ValueError(f"unexpected label {label!r}")
    responses = [q[len(p):] for q, p in zip(queries, prompts)]
    rewards = [r.count("e") / max(1, len(r)) for r in responses]
    return {"rewards": rewards, "extra_logs": {"label_seen": [1.0 for _ in labels]}}
'''


def base_args(policy: Path, prompts: Path, out: Path, reward: str, ray_address: str | None) -> list[str]:
    """Two steps of 2 prompts x 4 samples, 8 new tokens; joins `ray_address` (None: the run starts a local Ray)."""
    args = ["--pretrain", str(policy), "--prompt-data", str(prompts), "--input-key", "input", "--label-key",
            "answer", "--remote-rm-url", reward, "--save-path", str(out), "--ckpt-path", str(out / "ckpt"),
            "--rollout-batch-size", "2", "--n-samples-per-prompt", "4", "--micro-rollout-batch-size", "2",
            "--train-batch-size", "8", "--micro-train-batch-size", "4", "--generate-max-len", "8",
            "--prompt-max-len", "64", "--max-samples", "4", "--placement-timeout", "60"]
    return args + (["--ray-address", ray_address] if ray_address else [])


def train(args: list[str], timeout: float = 240, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`rlhfctl train-ppo ARGS` run to its end (in `env`, default the tests' ENV)."""
    return run_rlhfctl("train-ppo", *args, timeout=timeout, env=env)


def start_training(args: list[str]) -> ForkedRun:
    """`rlhfctl train-ppo ARGS` started in a process of its own (forked, as run_rlhfctl's), for a test that acts
    while it runs: poll(), send_signal(), kill(), communicate() as a subprocess.Popen's."""
    return ForkedRun(["train-ppo", *args])


def metrics(out: Path) -> list[dict]:
    """The records of OUT/metrics.jsonl so far ([] before the first step)."""
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def assert_reward_rises(out: Path, steps_expected: int, by: float = 0.02) -> list[dict]:
    """The run logged steps 1..steps_expected and its mean reward over the last 5 beat the first 5 by `by`; returns
    the steps' metrics."""
    steps = metrics(out)
    assert [m["step"] for m in steps] == list(range(1, steps_expected + 1))
    first = sum(m["reward"] for m in steps[:5]) / 5
    last = sum(m["reward"] for m in steps[-5:]) / 5
    assert last > first + by, (first, last)
    return steps


def assert_loads_as_causal_lm(folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(folder)
    AutoTokenizer.from_pretrained(folder)


def safetensors_weights(folder: Path) -> dict:
    """The tensors of a saved policy's model.safetensors, by name."""
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def deepspeed_weights(actor_folder: Path) -> dict:
    """The model weights a role's DeepSpeed checkpoint (ZeRO 0-2, one worker) holds, by name."""
    import torch

    tag = (Path(actor_folder) / "latest").read_text().strip()
    return torch.load(Path(actor_folder) / tag / "mp_rank_00_model_states.pt", map_location="cpu",
                      weights_only=False)["module"]
