"""The arithmetic demo (the README's main command): its configs, its control, and a short run of every stage."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhfctl.config import read_config_file, resolve
from tests.helpers import ROOT, run_cli

ARITH = ROOT / "examples" / "arithmetic"
sys.path.insert(0, str(ARITH))

import demo  # noqa: E402
from train_progress import STARTING, MetricsTail, TrainBar, TrainView  # noqa: E402
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


def test_the_math_verifier_variant_checks_the_reward_it_trains_with(capsys, monkeypatch):
    """--variant math-verifier runs check-reward on the config's own terms (train-ppo gets no --remote-rm-url), and
    on held-out oracle answers those terms pay 1.1 and read the labels."""
    monkeypatch.chdir(ROOT)
    spec = demo.VARIANTS["math-verifier"]
    train = resolve("train-ppo", {}, ARITH / spec.train_config)
    code, out, _ = run_cli(["check-reward", *spec.builtin, "--prompt-data", str(train.eval_dataset),
                            "--input-key", train.input_key, "--label-key", train.label_key, "--max-samples", "64",
                            "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["reward"] == " + ".join(f"{t.weight:g} x {name}={t.source}"
                                                         for name, t in train.reward.items())
    assert report["stats"]["mean"] == pytest.approx(1.1) and report["stats"]["separation"]["difference"] > 0.9
    assert spec.accuracy_key == "eval/" + next(name for name, t in train.reward.items() if t.source == "math")


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
def test_a_short_demo_runs_every_stage(tmp_path):
    """The README's command with its output in a log (as in CI): each stage prints there, train-ppo a line per step."""
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, str(ARITH / "demo.py"), "--steps", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed[-3000:]
    summary = json.loads((out / "summary.json").read_text())

    assert "→ OK (exit 0)" in printed and re.search(r"step 1/2 .*reward", printed) and "step 2/2" in printed
    assert "━" not in printed  # no live bar where nothing watches it
    assert "serving on http://127.0.0.1:" in (out / "serve-rm.log").read_text()
    assert summary["logs"] == ["serve-rm.log"] and not (out / "ckpt").exists()  # no checkpoint unless asked for
    assert summary["server_url"].endswith("/get_reward") and summary["server_exit_code"] == 0
    records = [json.loads(line) for line in (out / "policy" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in records] == [0, 1, 2]
    assert {m["step"] for m in records if "eval/exact_match" in m} == {0, 2}
    # train-ppo's greedy evaluation agrees with evaluate.py's (other batch shapes may flip a near-tie or two)
    assert records[0]["eval/exact_match"] == pytest.approx(summary["accuracy_before"], abs=0.01)
    assert records[-1]["eval/exact_match"] == pytest.approx(summary["accuracy_after"], abs=0.01)
    assert 0 < summary["accuracy_before"] < 1 and summary["steps"] == 2 and summary["samples"] == 2 * 32 * 8
    view = TrainView(total=2)  # what the live bar would have shown, from the real run's metrics
    view.update(records)
    assert view.line() == (f"reward {records[-1]['reward']:.3f}  held-out exact match "
                           f"{records[0]['eval/exact_match']:.1%} -> {records[-1]['eval/exact_match']:.1%}")
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "summary.json").read_text())["gain_points"] == summary["gain_points"]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out / "policy")


def test_seconds_to_90_percent_count_steps_and_evaluations_until_the_first_evaluation_there():
    metrics = [{"step": 0, "eval/exact_match": 0.4, "time/evaluate": 1.0},
               {"step": 1, "time/step": 2.0}, {"step": 2, "time/step": 2.0, "eval/exact_match": 0.85,
                                                "time/evaluate": 1.0},
               {"step": 3, "time/step": 2.0, "eval/exact_match": 0.9, "time/evaluate": 1.0},
               {"step": 4, "time/step": 2.0, "eval/exact_match": 0.95, "time/evaluate": 1.0}]
    assert demo.rl_seconds_to(metrics, 0.9) == 9.0  # 1 + 2 + (2 + 1) + (2 + 1)
    assert demo.rl_seconds_to(metrics[:3], 0.9) is None


# ------------------------------------------------------------------------------------------------ the live bar
def test_the_bar_shows_step_reward_and_held_out_accuracy():
    view = TrainView(total=250)
    assert view.line() == STARTING  # Ray, the workers and the engine are starting: no step yet
    view.update([{"step": 0, "eval/reward": 0.43, "eval/exact_match": 0.428}])
    assert view.step == 0 and view.line() == "held-out exact match 42.8%"
    view.update([{"step": 1, "reward": 0.41}, {"step": 2, "reward": 0.5}])
    assert view.step == 2 and view.line() == "reward 0.500  held-out exact match 42.8%"
    view.update([{"step": 25, "reward": 0.7, "eval/reward": 0.61, "eval/exact_match": 0.612}])
    assert view.step == 25 and view.line() == "reward 0.700  held-out exact match 42.8% -> 61.2%"


def test_without_an_exact_match_the_bar_shows_the_held_out_reward():
    view = TrainView(total=10)  # a reward model logs no eval/exact_match
    view.update([{"step": 0, "eval/reward": 0.25}, {"step": 1, "reward": 0.3, "eval/reward": None}])
    assert view.line() == "reward 0.300  held-out reward 0.250"


def test_metrics_are_read_as_they_are_appended_and_a_half_written_line_waits(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read() == []  # train-ppo has not started logging
    path.write_text('{"step": 1, "reward": 0.1}\n{"step": 2, "rew')
    assert tail.read() == [{"step": 1, "reward": 0.1}]
    with path.open("a") as f:
        f.write('ard": 0.2}\n')
    assert tail.read() == [{"step": 2, "reward": 0.2}] and tail.read() == []


def test_on_a_terminal_the_stage_draws_the_bar_and_its_output_goes_to_the_log(tmp_path):
    """run_stage with a bar, as on a terminal: a child standing in for train-ppo prints step lines (into the log)
    and appends to metrics.jsonl; the bar follows it to the end."""
    from rich.console import Console

    metrics_file, log = tmp_path / "metrics.jsonl", tmp_path / "train-ppo.log"
    child = ("import json, time\n"
             "for step, acc in ((0, 0.4), (1, None), (2, None), (3, 0.6)):\n"
             "    print(f'step {step}/3', flush=True)\n"
             f"    with open({str(metrics_file)!r}, 'a') as f:\n"
             "        f.write(json.dumps({'step': step, 'reward': step / 4, 'eval/exact_match': acc}) + '\\n')\n"
             "    time.sleep(0.5)\n")
    screen = io.StringIO()
    bar = TrainBar(metrics_file, 3, Console(file=screen, force_terminal=True, color_system=None, width=150))
    demo.run_stage("train-ppo", [sys.executable, "-c", child], log, echo=False, bar=bar)
    drawn = screen.getvalue()
    frames = re.split(r"[\r\n]", drawn)
    assert any(re.search(r"[012]/3 .*held-out exact match 40.0%", f) for f in frames)  # redrawn as the run goes
    assert "3/3" in drawn and "reward 0.750  held-out exact match 40.0% -> 60.0%" in drawn
    assert "step 3/3" not in drawn and "step 3/3" in log.read_text()


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
