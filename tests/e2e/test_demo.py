"""The arithmetic demo (the README's main command): its configs, its control, and a short run of every stage."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from rlhfctl.config import read_config_file, resolve
from tests.helpers import ROOT

ARITH = ROOT / "examples" / "arithmetic"
sys.path.insert(0, str(ARITH))

import demo  # noqa: E402
from reward_func import reward_func  # noqa: E402

SHIPPED_CONFIGS = sorted(ROOT.glob("examples/**/*.yaml"))
PATH_KEYS = ("pretrain", "prompt_data", "eval_dataset", "reward_func", "reward_pretrain", "agent_func_path",
             "judge_template")


def command_of(config: Path) -> str:
    return {"serve": "serve-rm", "train": "train-ppo"}[config.name.split("_", 1)[0]]


# ------------------------------------------------------------------------------------------------ configs
def test_every_variant_has_its_configs():
    names = {p.name for p in SHIPPED_CONFIGS}
    for variant in demo.VARIANTS.values():
        assert variant.train_config in names
        assert variant.serve_config is None or variant.serve_config in names


@pytest.mark.parametrize("config", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_against_the_schema(config: Path, monkeypatch):
    """Each file resolves for its command with no flag added, and every path it names exists (from the repo root)."""
    monkeypatch.chdir(ROOT)
    keys = read_config_file(config)
    cfg = resolve(command_of(config), {}, config)
    assert set(keys) <= set(type(cfg).model_fields)  # no key is silently ignored by its own command
    for key in PATH_KEYS:
        value = getattr(cfg, key, None)
        if value is not None:
            assert (ROOT / value).exists(), f"{config.name}: {key} {value} does not exist"
    url = getattr(cfg, "remote_rm_url", None)
    if url is not None and not url.startswith("http"):
        assert (ROOT / url).is_file()


# ------------------------------------------------------------------------------------------------ control
def test_shuffled_reward_keeps_the_payout_but_not_who_gets_it():
    import shuffled_reward_func

    prompts = [f"{a}+{a}=" for a in range(10, 74)]
    labels = [str(2 * a) for a in range(10, 74)]
    answers = [lab if i % 2 == 0 else "0" for i, lab in enumerate(labels)]  # every other answer right
    queries = [p + a for p, a in zip(prompts, answers)]
    true = reward_func(queries, prompts, labels)
    shuffled = shuffled_reward_func.reward_func(queries, prompts, labels)
    assert sorted(shuffled["rewards"].tolist()) == sorted(true["rewards"].tolist())
    assert not torch.equal(shuffled["rewards"], true["rewards"])
    assert torch.equal(shuffled["extra_logs"]["exact_match"], true["rewards"])  # the logs still tell the truth


# ------------------------------------------------------------------------------------------------ the demo
@pytest.mark.slow
def test_a_short_demo_runs_every_stage(tmp_path, ray_address, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", ray_address)  # its train-ppo joins the session's cluster, as in a Ray job
    out = tmp_path / "demo"
    summary = demo.run_demo("reward-func-server", out=out, steps=2, echo=False)

    assert "→ OK (exit 0)" in (out / "check-reward.log").read_text()
    assert "serving on http://127.0.0.1:" in (out / "serve-rm.log").read_text()
    assert summary["server_url"].endswith("/get_reward") and summary["server_exit_code"] == 0
    records = [json.loads(line) for line in (out / "policy" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in records] == [0, 1, 2]
    assert {m["step"] for m in records if "eval/exact_match" in m} == {0, 2}
    # train-ppo's greedy evaluation agrees with evaluate.py's (other batch shapes may flip a near-tie or two)
    assert records[0]["eval/exact_match"] == pytest.approx(summary["accuracy_before"], abs=0.01)
    assert records[-1]["eval/exact_match"] == pytest.approx(summary["accuracy_after"], abs=0.01)
    assert 0 < summary["accuracy_before"] < 1 and summary["steps"] == 2 and summary["samples"] == 2 * 32 * 8
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "summary.json").read_text())["gain_points"] == summary["gain_points"]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out / "policy")


@pytest.mark.slow
def test_a_broken_reward_stops_the_demo_before_the_server_starts(tmp_path):
    broken = tmp_path / "broken_reward.py"
    broken.write_text("def reward_func(queries, prompts, labels):\n    return [0.0]\n")  # one reward per batch
    out = tmp_path / "demo"
    with pytest.raises(demo.DemoError, match="check-reward failed"):
        demo.run_demo("reward-func-server", out=out, steps=1, reward_func=broken, echo=False)
    assert not (out / "serve-rm.log").exists() and not (out / "policy").exists()


@pytest.mark.parametrize("args, needle", [
    (["--steps", "0"], "--steps must be from 1 to 125"),
    (["--reward-func", "no_such_file.py"], "no such file"),
    (["--variant", "reward-model-server", "--reward-func", str(ARITH / "reward_func.py")], "reward_func variants"),
    (["--variant", "gpt"], "invalid choice"),
    (["--steps", "126"], "--steps must be from 1 to 125"),
])
def test_bad_demo_options_exit_2(args, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main(args)
    assert exc.value.code == 2 and needle in capsys.readouterr().err
