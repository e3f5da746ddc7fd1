"""The arithmetic demo's shipped data and models: they load offline and behave as the demo needs.

The demo's claim is that RL improves the policy, so besides "it loads" these tests pin what makes that claim honest
and possible: the policy is stuck at partial accuracy for a reason RL can fix (it writes its teacher's forgotten
carries, yet gives the right answer real probability), the reward pays exactly for right answers, and the reward
model ranks a right answer above the policy's typical wrong one.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from tests.helpers import ARITHMETIC

ARITH = ARITHMETIC
sys.path.insert(0, str(ARITH))  # the example's scripts import each other by plain name, as when run as scripts

import evaluate as arith_eval  # noqa: E402
import make_data  # noqa: E402
import train_models  # noqa: E402
from reward_func import final_number, response_of, reward_func  # noqa: E402

POLICY, REWARD_MODEL = ARITH / "policy", ARITH / "reward_model"
TRAIN, TEST = ARITH / "train.jsonl", ARITH / "test.jsonl"


@pytest.fixture(scope="module")
def test_rows() -> list[dict]:
    return make_data.read_jsonl(TEST)


@pytest.fixture(scope="module")
def policy():
    return AutoTokenizer.from_pretrained(POLICY), AutoModelForCausalLM.from_pretrained(POLICY).eval()


@pytest.fixture(scope="module")
def reward_model():
    return AutoTokenizer.from_pretrained(REWARD_MODEL), AutoModelForSequenceClassification.from_pretrained(
        REWARD_MODEL
    ).eval()


# ------------------------------------------------------------------------------------------------ data
def test_data_files_are_what_make_data_writes_and_disjoint():
    train, test = make_data.split()
    assert make_data.read_jsonl(TRAIN) == train and make_data.read_jsonl(TEST) == test
    assert (len(train), len(test)) == (make_data.N_TRAIN, make_data.N_TEST)
    assert not {r["input"] for r in train} & {r["input"] for r in test}
    for row in train + test:
        assert set(row) == {"input", "answer"}
        a, op, b = int(row["input"][:2]), row["input"][2], int(row["input"][3:5])
        assert row["input"] == f"{a}{op}{b}=" and row["answer"] == str(a + b if op == "+" else a - b)
        assert int(row["answer"]) >= 0 and set(row["input"]) <= set(make_data.ALPHABET)
    assert sum("+" in r["input"] for r in test) == len(test) // 2


# ------------------------------------------------------------------------------------------------ reward
def test_reward_pays_exactly_for_the_right_final_number():
    cases = [  # (response, reward, format_ok)
        ("47</s>", 1, 1),
        ("47", 1, 1),
        (" 47 </s><pad><pad>", 1, 1),
        ("the answer is 47", 1, 0),  # the final number counts; the format check says it is not the taught format
        ("047", 1, 0),
        ("48</s>", 0, 1),
        ("57", 0, 1),  # the forgotten carry is wrong
        ("4 7", 0, 0),
        ("", 0, 0),
        ("</s>", 0, 0),
        ("+=", 0, 0),
        ("47 48", 0, 0),  # the final number is 48
    ]
    prompts = ["12+35="] * len(cases)
    queries = [p + r for p, (r, _, _) in zip(prompts, cases)]
    out = reward_func(queries, prompts, ["47"] * len(cases))
    assert set(out) == {"rewards", "scores", "extra_logs"}
    assert out["rewards"].tolist() == [float(c[1]) for c in cases]
    assert out["scores"].tolist() == out["rewards"].tolist()
    assert out["extra_logs"]["exact_match"].tolist() == [float(c[1]) for c in cases]
    assert out["extra_logs"]["format_ok"].tolist() == [float(c[2]) for c in cases]


def test_reward_reads_the_response_not_the_prompt():
    # "12+35=" ends with 35: a prompt whose own numbers match the label must not earn a reward on an empty answer.
    assert reward_func(["12+35="], ["12+35="], ["35"])["rewards"].tolist() == [0.0]
    assert response_of("<s>12+35=47</s>", "12+35=") == "47"  # special tokens decoded into the query are markup
    assert response_of("x 12+35=47", "12+35=") == "47"  # a prompt re-rendered with a prefix is still found
    assert response_of("99-1=98", "something else") == "98"  # no prompt found: the text after the last "="
    assert final_number("no digits") is None and final_number("-3 then 12") == 12


def test_reward_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 queries, 1 prompts"):
        reward_func(["1+1=2", "1+1=3"], ["1+1="], ["2", "2"])


# ------------------------------------------------------------------------------------------------ policy
def test_shipped_folders_load_offline_and_are_small(policy, reward_model):
    tok, model = policy
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.head_dim) == (128, 4, 32)  # vLLM CPU needs head_dim >= 32
    assert 0.9e6 < sum(p.numel() for p in model.parameters()) < 1.2e6
    assert tok("12+35=").input_ids == [tok.convert_tokens_to_ids(c) for c in "12+35="]  # characters, no BOS
    assert (tok.pad_token_id, tok.eos_token_id) == (cfg.pad_token_id, cfg.eos_token_id)
    rm_tok, rm = reward_model
    assert rm.config.num_labels == 1 and rm.config.pad_token_id == rm_tok.pad_token_id
    assert rm.config.normalize_reward is False and rm.config.std > 0
    for folder in (POLICY, REWARD_MODEL):
        assert (folder / "model.safetensors").stat().st_size < 5_000_000
        assert not list(folder.glob("*.bin"))


def test_policy_is_at_the_plateau_of_its_teacher(test_rows):
    # The shipped policy measured 42.8% on all 400; the first 200 are in the same band (greedy is deterministic).
    acc = arith_eval.accuracy(POLICY, TEST, max_samples=200)
    assert 0.30 <= acc <= 0.55, acc


def test_policy_mistakes_are_the_teachers_and_the_right_answer_has_probability(policy, test_rows):
    """Why RL can help: on carry problems the greedy answer is the forgotten carry, but the right one is sampled
    often enough for a group of 8 samples to contain it."""
    tok, model = policy
    rows = [r for r in test_rows if train_models.needs_carry(r["input"])][:60]
    greedy = arith_eval.generate(model, tok, [r["input"] for r in rows])
    forgot = [train_models.forgot_carry(r["input"]) for r in rows]
    assert sum(g.strip() == f for g, f in zip(greedy, forgot)) >= 0.8 * len(rows)
    p_right = _sequence_probability(model, tok, rows, [r["answer"] for r in rows])
    assert 0.05 < p_right.mean() < 0.5, p_right.mean()


@torch.no_grad()
def _sequence_probability(model, tok, rows: list[dict], answers: list[str]) -> torch.Tensor:
    """P(answer then eos | prompt) under the policy, by teacher forcing."""
    ids, mask, labels = train_models.encode(tok, [r["input"] for r in rows], answers)
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1], -1)
    target = labels[:, 1:]
    picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (target != -100)).sum(1).exp()


def test_evaluate_cli_prints_json(capsys):
    arith_eval.main([str(POLICY), "--max-samples", "20", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["accuracy"] == pytest.approx(arith_eval.accuracy(POLICY, TEST, 20))


# ------------------------------------------------------------------------------------------------ reward model
def test_reward_model_ranks_right_above_wrong_on_held_out_prompts(reward_model, test_rows):
    tok, rm = reward_model
    rows = test_rows[:100]
    acc = train_models.pairwise_accuracy(rm, tok, rows, seed=0, k=2)
    assert acc["forgot_carry"] == 1.0  # the policy's own mistake is always ranked below the right answer
    assert acc["any_wrong"] >= 0.85, acc  # the script reports about 92% on all 400 held-out prompts
    with torch.no_grad():
        right = train_models.rm_scores(rm, tok, [r["input"] + r["answer"] for r in rows])
        empty = train_models.rm_scores(rm, tok, [r["input"] for r in rows])
    assert (right > empty).float().mean() >= 0.9


# ------------------------------------------------------------------------------------------------ training script
def test_teacher_mistake_and_noise_rate():
    assert [train_models.forgot_carry(p) for p in ("17+25=", "57+68=", "42-17=", "12+35=", "48-13=")] == [
        "32", "15", "35", "47", "35"]
    rows = make_data.read_jsonl(TRAIN)
    answers = train_models.noisy_answers(rows, epoch=0)
    assert answers == train_models.noisy_answers(rows, epoch=0) != train_models.noisy_answers(rows, epoch=1)
    carry = [(a, r) for a, r in zip(answers, rows) if train_models.needs_carry(r["input"])]
    wrong = sum(a != r["answer"] for a, r in carry) / len(carry)
    assert abs(wrong - train_models.NOISE) < 0.03
    assert all(a == r["answer"] for a, r in zip(answers, rows) if not train_models.needs_carry(r["input"]))


def test_training_is_deterministic(monkeypatch, test_rows):
    """A few steps of each phase, twice: the same weights (the full script is checked by comparing hashes)."""
    monkeypatch.setitem(train_models.SFT, "steps", 3)
    monkeypatch.setitem(train_models.SFT, "batch_size", 16)
    monkeypatch.setitem(train_models.RM, "steps", 2)
    monkeypatch.setitem(train_models.RM, "batch_size", 8)
    tok = train_models.build_char_tokenizer(make_data.ALPHABET)
    rows, held_out = make_data.read_jsonl(TRAIN)[:64], test_rows[:8]

    def run() -> dict[str, torch.Tensor]:
        policy, curve = train_models.train_policy(tok, rows, held_out, log=lambda _: None)
        rm, _ = train_models.train_reward_model(tok, policy, rows, held_out, log=lambda _: None)
        assert [step for step, _ in curve] == [3]
        weights = {f"policy.{k}": v for k, v in policy.state_dict().items()}
        return weights | {f"rm.{k}": v for k, v in rm.state_dict().items()}

    first, second = run(), run()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
