"""Prompt datasets through the `datasets` library, with errors a user can act on.

OpenRLHF reads `--prompt-data` (a file, a comma-separated list, a saved dataset or a hub name), takes the prompt from
`--input-key` and the label from `--label-key`, and optionally formats the prompt with the tokenizer's chat template.
This module does the same, and turns every way the data can be wrong into a DataError that names the file, the key
or the rows, instead of a traceback from deep inside `datasets`.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from rlhfctl.errors import ConfigError, DataError, UsageError
from rlhfctl.hub import is_hub_id, resolve

# file extension -> `datasets` packaged builder
FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
_SHOW = 5  # how many row numbers an error message lists


def _rows_text(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:_SHOW])
    more = f" and {len(rows) - _SHOW} more" if len(rows) > _SHOW else ""
    return f"{len(rows)} row(s) (0-based: {shown}{more})"


def _root_cause(exc: BaseException) -> str:
    """The innermost message of an exception chain: `datasets` wraps the parser's error in a generic one."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return f"{type(exc).__name__}: {exc}".strip()


def _bad_jsonl_line(path: Path) -> str | None:
    """Find the first line of a .jsonl file that is not a JSON object, for a precise message."""
    try:
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    return f"line {n} is not valid JSON ({e.msg} at column {e.colno})"
                if not isinstance(obj, dict):
                    return f"line {n} is a JSON {type(obj).__name__}, not an object"
    except UnicodeDecodeError as e:
        return f"not UTF-8 text ({e.reason} at byte {e.start})"
    return None


def _load_file(path: Path) -> datasets.Dataset:
    builder = FORMATS.get(path.suffix.lower())
    if builder is None:
        raise DataError(
            f"{path}: unknown file type {path.suffix or '(no extension)'!r}; "
            f"expected one of {', '.join(FORMATS)} or a folder written by save_to_disk"
        )
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    # CSV cells are text: read them as strings, so a label "007" stays "007" and a column of whole numbers with
    # a gap does not turn into floats ("1.0"). Empty cells still come back missing.
    options = {}
    try:
        if builder == "csv":
            with path.open(encoding="utf-8", newline="") as f:
                header = next(csv.reader(f), [])
            options["features"] = datasets.Features({name: datasets.Value("string") for name in header})
        return datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as e:  # datasets raises many types here (DatasetGenerationError, ArrowInvalid, ...)
        detail = _bad_jsonl_line(path) if path.suffix.lower() == ".jsonl" else None
        raise DataError(f"{path}: cannot read this {builder} file: {detail or _root_cause(e)}") from None


def _load_folder(path: Path, split: str) -> datasets.Dataset:
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataError(
            f"{path}: a folder must be one written by Dataset.save_to_disk or DatasetDict.save_to_disk "
            f"({_root_cause(e)})"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if split in loaded:
            return loaded[split]
        if split == "train" and len(loaded) == 1:
            return next(iter(loaded.values()))
        raise DataError(f"{path}: a DatasetDict without a {split!r} split (splits: {', '.join(loaded)})")
    return loaded


def _load_one(spec: str, split: str) -> datasets.Dataset:
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_folder(path, split)
    if path.is_file():
        return _load_file(path)
    if is_hub_id(spec) and path.suffix.lower() not in FORMATS:
        return _load_hub(spec, split)
    raise DataError(f"{spec}: no such file or folder")


def _load_hub(repo_id: str, split: str) -> datasets.Dataset:
    """A Hub dataset through the same Hub cache as models (rlhfctl.hub), then read from its snapshot folder as
    `datasets` reads the repository (its data files, or the configs in its README). Offline, a dataset that only
    `datasets`' own cache holds (prepared by an earlier load_dataset) is still found."""
    try:
        folder = resolve(repo_id, repo_type="dataset")
    except UsageError as hub_error:
        try:
            return datasets.load_dataset(repo_id, split=split)
        except Exception:
            raise DataError(str(hub_error)) from None
    try:
        loaded = datasets.load_dataset(folder, split=split)
    except Exception as e:
        raise DataError(f"{repo_id}: cannot read the Hub dataset's split {split!r} from {folder}: "
                        f"{_root_cause(e)[:300]}") from None
    return loaded


def load_rows(prompt_data: str, split: str = "train") -> datasets.Dataset:
    """Load `prompt_data`: a .jsonl/.json/.parquet/.csv file, a save_to_disk folder, or a comma-separated list
    of them (concatenated in order). A DatasetDict or hub dataset gives its `split` (a single file is one split).
    Raises DataError naming the path."""
    specs = [s.strip() for s in prompt_data.split(",")] if not Path(prompt_data).exists() else [prompt_data]
    specs = [s for s in specs if s]
    if not specs:
        raise DataError("no prompt data given")
    parts = [_load_one(s, split) for s in specs]
    for spec, part in zip(specs, parts):
        if len(part) == 0:
            raise DataError(f"{spec}: no rows")
    if len(parts) == 1:
        return parts[0]
    try:
        return datasets.concatenate_datasets(parts)
    except Exception as e:
        cols = "; ".join(f"{s}: {', '.join(p.column_names)}" for s, p in zip(specs, parts))
        raise DataError(f"cannot concatenate {prompt_data}: the files' columns differ ({cols}): {e}") from None


def _require_column(ds: datasets.Dataset, key: str, flag: str, source: str) -> None:
    if key not in ds.column_names:
        raise DataError(
            f"{source}: no column {key!r} ({flag}); the columns are: {', '.join(ds.column_names) or '(none)'}"
        )


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def inspect_labels(ds: datasets.Dataset, label_key: str) -> dict[str, Any]:
    """Label health for `check-reward` and `load_prompts`: {"rows", "missing", "empty", "types"}.

    `missing`: 0-based rows whose label is None/NaN; `empty`: rows whose label is an empty or blank string (or an
    empty list/dict); `types`: count of each Python type name ("None" for missing).
    """
    _require_column(ds, label_key, "--label-key", "dataset")
    missing, empty, types = [], [], Counter()
    for row, value in enumerate(ds[label_key]):
        if _is_missing(value):
            missing.append(row)
            types["None"] += 1
            continue
        types[type(value).__name__] += 1
        if (isinstance(value, str) and not value.strip()) or (isinstance(value, (list, dict)) and not value):
            empty.append(row)
    return {"rows": len(ds), "missing": missing, "empty": empty, "types": dict(types)}


def _label_text(value: Any) -> str:
    """Labels reach reward functions as strings: numbers via str(), lists/dicts as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


@dataclass
class PromptExample:
    """One prompt as the policy sees it (chat template applied if asked), its label, and its 0-based row."""

    prompt: str
    label: str
    row: int


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    )


def load_prompts(
    prompt_data: str,
    input_key: str = "input",
    label_key: str | None = None,
    apply_chat_template: bool = False,
    tokenizer: Any = None,
    max_samples: int | None = None,
    input_template: str | None = None,
    split: str = "train",
) -> list[PromptExample]:
    """Load prompts (and labels) the way OpenRLHF's PromptDataset does, checking every row first.

    With `apply_chat_template` a string prompt becomes one user message and a list of {"role", "content"} dicts
    (OpenRLHF's `context_messages`) is used as is; the tokenizer renders it with add_generation_prompt=True.
    Without it, `input_template` (e.g. "Q: {}\\nA: ") may wrap string prompts. `max_samples` keeps the first rows.
    Rows without a label are an error when `label_key` is set; without `label_key` every label is "".
    """
    if max_samples is not None and max_samples <= 0:
        raise ConfigError(f"--max-samples must be > 0, not {max_samples}")
    if apply_chat_template:
        if tokenizer is None:
            raise ConfigError("--apply-chat-template needs a tokenizer")
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("--apply-chat-template: the tokenizer has no chat template")
    ds = load_rows(prompt_data, split)
    _require_column(ds, input_key, "--input-key", prompt_data)
    if label_key is not None:
        _require_column(ds, label_key, "--label-key", prompt_data)
    if max_samples is not None and max_samples < len(ds):
        ds = ds.select(range(max_samples))

    labels = [""] * len(ds)
    if label_key is not None:
        report = inspect_labels(ds, label_key)
        if report["missing"]:
            raise DataError(
                f"{prompt_data}: {_rows_text(report['missing'])} have no {label_key!r} label (--label-key)"
            )
        labels = [_label_text(v) for v in ds[label_key]]

    prompts = ds[input_key]
    bad = [r for r, p in enumerate(prompts) if not (isinstance(p, str) or _is_messages(p))]
    if bad:
        first = prompts[bad[0]]
        what = "missing" if _is_missing(first) else f"a {type(first).__name__}"
        raise DataError(
            f"{prompt_data}: {_rows_text(bad)} have a bad {input_key!r} (--input-key): row {bad[0]} is {what}; "
            "a prompt must be a string or a list of {'role', 'content'} messages"
        )
    if not apply_chat_template:
        lists = [r for r, p in enumerate(prompts) if not isinstance(p, str)]
        if lists:
            raise DataError(
                f"{prompt_data}: {_rows_text(lists)} hold a list of chat messages in {input_key!r}; "
                "pass --apply-chat-template to format them with the tokenizer's chat template"
            )

    examples = []
    for row, (prompt, label) in enumerate(zip(prompts, labels)):
        if apply_chat_template:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            try:
                text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception as e:
                raise DataError(f"{prompt_data}: row {row}: the chat template failed: {e}") from None
        else:
            text = input_template.format(prompt) if input_template else prompt
        examples.append(PromptExample(prompt=text, label=label, row=row))
    return examples


def load_texts(data: str, key: str, split: str = "train", max_samples: int | None = None,
               flags: tuple[str, str] = ("--pretrain-data", "--pretrain-input-key")) -> list[str]:
    """The `key` column of `data` (the formats of load_rows), its first `max_samples` rows: plain text, such as
    PPO-ptx's pretraining data. A missing column, or a row that is not a non-empty string, is a DataError naming
    `flags` (the options that gave the data and the key)."""
    ds = load_rows(data, split)
    _require_column(ds, key, flags[1], data)
    if max_samples is not None and max_samples < len(ds):
        ds = ds.select(range(max_samples))
    texts = ds[key]
    bad = [r for r, t in enumerate(texts) if not (isinstance(t, str) and t.strip())]
    if bad:
        first = texts[bad[0]]
        what = "missing" if _is_missing(first) else repr(first)[:60]
        raise DataError(f"{data} ({flags[0]}): {_rows_text(bad)} have no text in {key!r} ({flags[1]}): row "
                        f"{bad[0]} is {what}")
    return list(texts)


def build_query(prompt: str, response: str) -> str:
    """The text a reward source scores for a response given as text (check-reward's oracle and column responses):
    the formatted prompt followed by the response, with no separator.

    A generated response is decoded with its prompt as one token sequence instead (models/actor.decode_queries, as
    OpenRLHF does), which keeps a SentencePiece response's leading space and the prompt's --prompt-max-len cut.
    """
    return prompt + response
