"""Prompt datasets: every supported format loads, and every kind of bad data gives a message a user can act on."""

from __future__ import annotations

import json

import datasets
import pytest

from rlhfctl.data import PromptExample, build_query, inspect_labels, load_prompts, load_rows
from rlhfctl.errors import ConfigError, DataError
from rlhfctl.models.tiny import build_tokenizer
from tests.helpers import write_jsonl

ROWS = [
    {"input": "What is 2 + 3?", "answer": "5"},
    {"input": "What is 10 - 4?", "answer": "6"},
    {"input": "What is 7 * 6?", "answer": "42"},
]


@pytest.fixture(scope="module")
def n_prompts(prompt_file):
    return len(prompt_file.read_text().splitlines())


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


# --- formats -----------------------------------------------------------------------------------------------------


def test_jsonl(prompt_file, n_prompts):
    ds = load_rows(str(prompt_file))
    assert len(ds) == n_prompts and ds[0] == ROWS[0] and set(ds.column_names) == {"input", "answer"}


@pytest.mark.parametrize("ext", ["json", "parquet", "csv"])
def test_other_formats(tmp_path, ext):
    path = tmp_path / f"p.{ext}"
    getattr(datasets.Dataset.from_list(ROWS), f"to_{ext}")(str(path))
    ds = load_rows(str(path))
    assert ds["input"] == [r["input"] for r in ROWS]


def test_json_array_file(tmp_path):
    path = tmp_path / "array.json"
    path.write_text(json.dumps(ROWS), encoding="utf-8")
    assert load_rows(str(path))["answer"] == ["5", "6", "42"]


def test_comma_separated_list_is_concatenated(tmp_path, prompt_file, n_prompts):
    other = write_jsonl(tmp_path / "more.jsonl", [{"input": "extra", "answer": "x"}])
    ds = load_rows(f"{prompt_file}, {other}")
    assert len(ds) == n_prompts + 1 and ds["input"][-1] == "extra"


def test_save_to_disk_folders(tmp_path):
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    assert len(load_rows(str(tmp_path / "ds"))) == 3
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert len(load_rows(str(tmp_path / "dd"))) == 3  # the "train" split
    assert len(load_rows(str(tmp_path / "dd"), split="test")) == 1  # --prompt-split / --eval-split
    with pytest.raises(DataError, match=r"without a 'validation' split \(splits: train, test\)"):
        load_rows(str(tmp_path / "dd"), split="validation")


# --- bad data ----------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: no such file"):
        load_rows(str(tmp_path / "nope.jsonl"))


def test_missing_file_in_comma_list(tmp_path, prompt_file):
    with pytest.raises(DataError, match=r"gone\.jsonl: no such file"):
        load_rows(f"{prompt_file},{tmp_path / 'gone.jsonl'}")


@pytest.mark.parametrize("name, content, match", [
    ("prompts.txt", b"hello\n", r"prompts\.txt: unknown file type '\.txt'.*\.jsonl"),
    ("bad.jsonl", b'{"input": "ok"}\n{"input": oops}\n', r"bad\.jsonl: cannot read .*line 2 is not valid JSON"),
    ("bad.parquet", b"not parquet at all", r"bad\.parquet: cannot read"),
    ("empty.jsonl", b"", r"empty\.jsonl: the file is empty"),
], ids=["unknown-extension", "malformed-jsonl", "malformed-parquet", "empty"])
def test_an_unreadable_file_is_named_with_the_reason(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        load_rows(str(path))


def test_folder_not_saved_by_datasets(tmp_path):
    with pytest.raises(DataError, match="save_to_disk"):
        load_rows(str(tmp_path))


def test_hub_name_is_refused_offline():
    with pytest.raises(DataError, match="OpenRLHF/prompt-collection-v0.1: no such local file or folder, and .* is not "
                                        "in the Hugging Face cache .* HF_HUB_OFFLINE=1"):
        load_rows("OpenRLHF/prompt-collection-v0.1")


def test_missing_input_key_lists_columns(prompt_file):
    with pytest.raises(DataError, match=r"no column 'prompt' \(--input-key\); the columns are: input, answer"):
        load_prompts(str(prompt_file), input_key="prompt")


def test_missing_label_key_lists_columns(prompt_file):
    with pytest.raises(DataError, match=r"no column 'label' \(--label-key\); the columns are"):
        load_prompts(str(prompt_file), label_key="label")


def test_rows_without_labels_are_named(tmp_path):
    rows = [{"input": f"q{i}", "answer": None if i in (1, 4, 5, 6, 7, 8, 9) else str(i)} for i in range(10)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(DataError, match=r"7 row\(s\) \(0-based: 1, 4, 5, 6, 7 and 2 more\) have no 'answer' label"):
        load_prompts(str(path), label_key="answer")
    assert len(load_prompts(str(path))) == 10  # without --label-key labels are not needed


@pytest.mark.parametrize("bad, what", [(None, "missing"), (7, "a int"), ({"text": "x"}, "a dict")])
def test_wrong_prompt_type_names_the_row(tmp_path, bad, what):
    rows = [{"input": "fine"}, {"input": "fine"}, {"input": bad}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(DataError, match=rf"1 row\(s\) \(0-based: 2\) have a bad 'input'.*row 2 is {what}"):
        load_prompts(str(path))


def test_messages_need_chat_template(tmp_path):
    rows = [{"context_messages": [{"role": "user", "content": "hi"}]}]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    with pytest.raises(DataError, match="--apply-chat-template"):
        load_prompts(str(path), input_key="context_messages")


def test_chat_template_needs_a_tokenizer(prompt_file):
    with pytest.raises(ConfigError, match="tokenizer"):
        load_prompts(str(prompt_file), apply_chat_template=True)


# --- formatting, labels, truncation ------------------------------------------------------------------------------


def test_plain_prompts_and_labels(prompt_file, n_prompts):
    examples = load_prompts(str(prompt_file), label_key="answer")
    assert examples[0] == PromptExample(prompt="What is 2 + 3?", label="5", row=0)
    assert [e.row for e in examples] == list(range(n_prompts))


def test_numeric_labels_become_strings(tmp_path):
    path = write_jsonl(tmp_path / "n.jsonl", [{"input": "a", "y": 5}, {"input": "b", "y": 12}])
    assert [e.label for e in load_prompts(str(path), label_key="y")] == ["5", "12"]


def test_chat_template_on_strings(prompt_file, tokenizer):
    examples = load_prompts(str(prompt_file), apply_chat_template=True, tokenizer=tokenizer)
    assert examples[0].prompt == "<s><|user|>What is 2 + 3?</s><|assistant|>"


def test_chat_template_on_message_lists(tmp_path, tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"context_messages": messages, "answer": "hello"}])
    (ex,) = load_prompts(str(path), input_key="context_messages", label_key="answer",
                         apply_chat_template=True, tokenizer=tokenizer)
    assert ex.prompt == "<s><|system|>Be brief.</s><|user|>hi</s><|assistant|>" and ex.label == "hello"


def test_input_template(prompt_file):
    (ex, *_) = load_prompts(str(prompt_file), input_template="Q: {}\nA: ")
    assert ex.prompt == "Q: What is 2 + 3?\nA: "


def test_max_samples(prompt_file, n_prompts):
    assert [e.row for e in load_prompts(str(prompt_file), max_samples=2)] == [0, 1]
    assert len(load_prompts(str(prompt_file), max_samples=1000)) == n_prompts
    with pytest.raises(ConfigError, match="max-samples"):
        load_prompts(str(prompt_file), max_samples=0)


def test_max_samples_truncates_before_checking(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"input": "a", "y": "1"}, {"input": "b", "y": None}])
    assert len(load_prompts(str(path), label_key="y", max_samples=1)) == 1


def test_inspect_labels():
    ds = datasets.Dataset.from_list([{"y": "a"}, {"y": ""}, {"y": None}, {"y": "  "}, {"y": "b"}])
    assert inspect_labels(ds, "y") == {"rows": 5, "missing": [2], "empty": [1, 3], "types": {"str": 4, "None": 1}}
    ints = datasets.Dataset.from_list([{"y": 1}, {"y": 2}])
    assert inspect_labels(ints, "y")["types"] == {"int": 2}
    with pytest.raises(DataError, match="columns are: y"):
        inspect_labels(ds, "label")


def test_build_query():
    assert build_query("<s><|user|>1+1</s><|assistant|>", "2</s>") == "<s><|user|>1+1</s><|assistant|>2</s>"
    assert build_query("Q: hi\nA: ", "") == "Q: hi\nA: "


def test_csv_cells_stay_text(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("input,answer\nq1,007\nq2,\nq3,3\n")
    with pytest.raises(DataError, match=r"\(0-based: 1\) have no 'answer' label"):
        load_prompts(str(path), label_key="answer")
    assert [e.label for e in load_prompts(str(path), label_key="answer", max_samples=1)] == ["007"]
