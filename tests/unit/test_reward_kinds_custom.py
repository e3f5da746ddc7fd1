"""Custom-code reward models (issue 15, part 2): code shipped in the model folder runs only with
--trust-remote-code, which names the folder once; --reward-output picks the reward from the model's output."""

from __future__ import annotations

import logging

import pytest

from rlhfctl.config import resolve
from rlhfctl.rewards.factory import open_reward_model
from tests.helpers import run_cli

TEXTS = ["xx and x", "none here", "x", "a box of xylophones, xx"]


def counts(texts: list[str], char: str = "x") -> list[float]:
    return [float(t.count(char)) for t in texts]


def serve_cfg(folder, **options):
    return resolve("serve-rm", {"reward_pretrain": str(folder), **options})


def open_model(cfg):
    return open_reward_model(cfg.reward_pretrain, cfg, cfg)


def test_custom_code_reward_is_read_from_its_score_field(count_rm_dir):
    source = open_model(serve_cfg(count_rm_dir, trust_remote_code=True))
    assert source.score(TEXTS).rewards == counts(TEXTS)  # ArmoRM-style: the reward is the output's `score`


def test_reward_output_picks_a_field_and_column(count_rm_dir):
    negated = open_model(serve_cfg(count_rm_dir, trust_remote_code=True, reward_output="rewards:1"))
    assert negated.score(TEXTS).rewards == [-c for c in counts(TEXTS)]
    logits = open_model(serve_cfg(count_rm_dir, trust_remote_code=True, reward_output="logits"))
    assert logits.score(TEXTS).rewards == counts(TEXTS)  # one column: read as is


def test_custom_code_is_refused_without_the_flag_in_one_message(count_rm_dir, capsys, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"input": "q", "answer": "x"}\n')
    code, out, err = run_cli(["check-reward", str(count_rm_dir), "--prompt-data", str(data), "--label-key",
                               "answer"], capsys)
    assert code == 2, err
    assert "--trust-remote-code" in err and "modeling_count.py" in err
    assert "Traceback" not in err and "Do you wish" not in err + out  # not transformers' prompt


def test_the_flag_names_the_folder_once(count_rm_dir, caplog):
    from rlhfctl.models import remote_code
    from rlhfctl.serving.server import open_source

    remote_code._announced.discard(str(count_rm_dir))  # another test may have opened it in this process
    cfg = serve_cfg(count_rm_dir, trust_remote_code=True)
    with caplog.at_level(logging.WARNING, logger="rlhfctl"):
        open_source(cfg).close()
        open_source(cfg).close()
    said = [r.getMessage() for r in caplog.records if "--trust-remote-code" in r.getMessage()]
    assert len(said) == 1 and str(count_rm_dir) in said[0] and "modeling_count.py" in said[0]


@pytest.mark.parametrize("output, message", [
    ("nope", "has no field 'nope' (it has: score"),
    ("rewards:2", "rewards has 2 columns, so index 2 is out of range"),
    ("rewards", "not one number per text; pick a column with --reward-output rewards:INDEX"),
])
def test_bad_reward_output_is_a_clear_message_at_load(count_rm_dir, output, message, capsys, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"input": "q", "answer": "x"}\n')
    code, _, err = run_cli(["check-reward", str(count_rm_dir), "--trust-remote-code", "--reward-output", output,
                             "--prompt-data", str(data), "--label-key", "answer"], capsys)
    assert code == 2 and message in err, err


@pytest.mark.parametrize("args, message", [
    (["--reward-output", "logits[0]"], "--reward-output: must be a field of the model's output"),
    (["--reward-output", "logits:-1"], "--reward-output: must be a field of the model's output"),
])
def test_reward_output_form_is_checked(args, message, capsys):
    code, _, err = run_cli(["serve-rm", "--reward-pretrain", "rm", *args, "--print-config"], capsys)
    assert code == 2 and message in err, err


def test_a_standard_model_can_be_read_through_reward_output(tiny_rm_seqcls_dir):
    """--reward-output on a *ForSequenceClassification model runs it whole: logits:0 is its own reward."""
    plain = open_model(serve_cfg(tiny_rm_seqcls_dir))
    whole = open_model(serve_cfg(tiny_rm_seqcls_dir, reward_output="logits:0"))
    assert whole.score(TEXTS).rewards == pytest.approx(plain.score(TEXTS).rewards, abs=1e-5)



@pytest.mark.parametrize("command", ["serve-rm", "train-ppo"])
def test_serve_rm_and_train_ppo_refuse_the_code_before_starting_anything(command, count_rm_dir, tiny_policy_dir,
                                                                        prompt_file, capsys):
    args = {"serve-rm": ["--port", "0"],
            "train-ppo": ["--pretrain", str(tiny_policy_dir), "--prompt-data", str(prompt_file),
                          "--rollout-batch-size", "2", "--placement-timeout", "5"]}[command]
    code, _, err = run_cli([command, "--reward-pretrain", str(count_rm_dir), *args], capsys)
    assert code == 2 and "runs only with --trust-remote-code" in err, err
