"""What check-reward scores: the dataset's prompts and labels (data checks), responses chosen by --responses, and
queries built with `rlhfctl.data.build_query`, exactly as train-ppo builds them.

Also the control set for the label-separation check: the same kind of queries with the labels of other rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

import datasets

from rlhfctl.checks.report import Report, finding
from rlhfctl.config import CheckArgs, DataArgs, ModelLoadArgs, PretrainArgs, RolloutArgs, RunArgs
from rlhfctl.config.slices import CheckSampleGroups
from rlhfctl.data import PromptExample, build_query, inspect_labels, load_prompts, load_rows
from rlhfctl.errors import ConfigError, DataError

SHOW_ROWS = 5


@dataclass(frozen=True)
class Sample:
    """One query to score: `index` in this run, `row` in the dataset, and what the reward receives."""

    index: int
    row: int
    prompt: str
    label: str
    response: str
    decoded: str | None = None  # a generated response's query, decoded with its prompt as one token sequence

    @property
    def query(self) -> str:
        return self.decoded if self.decoded is not None else build_query(self.prompt, self.response)


def response_mode(spec: str) -> tuple[str, str]:
    """'column:answer' -> ('column', 'answer'); 'oracle' -> ('oracle', '')."""
    kind, _, arg = spec.partition(":")
    return kind, arg


# ------------------------------------------------------------------------------------------------ data checks
def load_examples(groups: CheckSampleGroups, report: Report) -> list[PromptExample] | None:
    """The prompts and labels train-ppo would read, after the data check; None when the data check failed.

    Unreadable files, a missing column and bad prompts raise DataError (a usage error, exit 2), as they would in
    train-ppo. Rows without a label fail the check; empty labels are a warning (a failure with --strict).
    """
    data, check = groups.data, groups.check
    kind, _ = response_mode(check.responses)
    if data.label_key is None and kind in ("oracle", "shuffled"):
        raise ConfigError(
            f"--responses {kind} builds responses from the labels: give --label-key (the dataset column holding them)"
        )
    assert data.prompt_data is not None  # the config validator requires it
    datasets.disable_progress_bars()  # "Generating train split" bars are noise in a report
    rows = load_rows(data.prompt_data, data.prompt_split)
    if data.max_samples is not None and data.max_samples < len(rows):
        rows = rows.select(range(data.max_samples))
    report.data = {"prompt_data": data.prompt_data, "rows": len(rows), "columns": list(rows.column_names)}
    for key, flag in ((data.input_key, "--input-key"), (data.label_key, "--label-key")):
        if key is not None and key not in rows.column_names:
            raise DataError(f"{data.prompt_data}: no column {key!r} ({flag}); the columns are: "
                            f"{', '.join(rows.column_names)}")
    if data.label_key is not None:
        health = inspect_labels(rows, data.label_key)
        report.data.update(label_key=data.label_key, label_types=health["types"], missing_labels=len(health["missing"]),
                           empty_labels=len(health["empty"]))
        types = ", ".join(f"{name} ({count})" for name, count in sorted(health["types"].items()))
        if health["missing"]:
            report.add("data", "fail",
                       f"{_rows(health['missing'])} of {len(rows)} have no {data.label_key!r} label; train-ppo "
                       "refuses this dataset (fill the labels or drop those rows)")
            return None
        if health["empty"]:
            report.add("data", finding(check.strict), f"{len(rows)} rows; {_rows(health['empty'])} have an empty "
                       f"{data.label_key!r} label (their reward cannot depend on an answer); label types: {types}")
        else:
            report.add("data", "pass", f"{len(rows)} rows, each with a label in {data.label_key!r}; label types: "
                       f"{types}")
    else:
        report.add("data", finding(check.strict),
                   f"{len(rows)} rows and no --label-key: the reward receives empty labels, so whether it reads "
                   "them cannot be checked")
    tokenizer = _template_tokenizer(check, groups.model, groups.load) if data.apply_chat_template else None
    return load_prompts(
        data.prompt_data, input_key=data.input_key, label_key=data.label_key,
        apply_chat_template=data.apply_chat_template, tokenizer=tokenizer, max_samples=data.max_samples,
        split=data.prompt_split,
    )


def _rows(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:SHOW_ROWS])
    more = ", ..." if len(rows) > SHOW_ROWS else ""
    return f"{len(rows)} row{'s' if len(rows) != 1 else ''} ({shown}{more})"


def _template_tokenizer(check: CheckArgs, model: PretrainArgs, load: ModelLoadArgs) -> Any:
    """The tokenizer whose chat template train-ppo applies: --pretrain's, else the sampling model's."""
    from rlhfctl.models.actor import load_tokenizer

    kind, arg = response_mode(check.responses)
    path = model.pretrain or (arg if kind == "model" else None)
    if path is None:
        raise ConfigError("--apply-chat-template needs --pretrain DIR (the tokenizer whose template train-ppo uses)")
    return load_tokenizer(path, disable_fast_tokenizer=load.disable_fast_tokenizer)


# ------------------------------------------------------------------------------------------------ responses
def build_samples(examples: list[PromptExample], groups: CheckSampleGroups) -> list[Sample]:
    """The queries of the main run, one per example (n per example for model:DIR, as a rollout samples them)."""
    kind, arg = response_mode(groups.check.responses)
    if kind == "oracle":
        responses = [ex.label for ex in examples]
    elif kind == "shuffled":
        sigma = derangement(len(examples), groups.run.seed)
        responses = [examples[sigma[i]].label for i in range(len(examples))]
    elif kind == "column":
        responses = _column_responses(examples, groups.data, arg)
    else:
        return _model_samples(examples, arg, groups.load, groups.rollout, groups.run)
    return [Sample(i, ex.row, ex.prompt, ex.label, r) for i, (ex, r) in enumerate(zip(examples, responses))]


def _column_responses(examples: list[PromptExample], data: DataArgs, column: str) -> list[str]:
    assert data.prompt_data is not None
    rows = load_rows(data.prompt_data, data.prompt_split)
    if column not in rows.column_names:
        raise DataError(f"--responses column:{column}: {data.prompt_data} has no column {column!r}; the columns "
                        f"are: {', '.join(rows.column_names)}")
    values = rows[column]
    bad = [ex.row for ex in examples if not isinstance(values[ex.row], str)]
    if bad:
        first = values[bad[0]]
        raise DataError(f"--responses column:{column}: {_rows(bad)} hold {type(first).__name__} "
                        f"({first!r:.40}), not a response string")
    return [values[ex.row] for ex in examples]


def _model_samples(examples: list[PromptExample], model_dir: str, load: ModelLoadArgs, rollout: RolloutArgs,
                   run: RunArgs) -> list[Sample]:
    """Responses sampled from a local policy with HF generate, `--n-samples-per-prompt` per prompt."""
    import torch

    from rlhfctl.models.actor import generate, load_policy, load_tokenizer
    from rlhfctl.models.compiled import check_can_compile, sampler_for

    if rollout.torch_compile:
        check_can_compile(model_dir, samples_with_hf=True, has_gpus=torch.cuda.is_available())
    tokenizer = load_tokenizer(model_dir, disable_fast_tokenizer=load.disable_fast_tokenizer)
    model = load_policy(model_dir, bf16=load.bf16, flash_attn=load.flash_attn)
    model.eval()
    sampler = sampler_for(model, rollout.torch_compile)
    torch.manual_seed(run.seed)
    expanded = [ex for ex in examples for _ in range(rollout.n_samples_per_prompt)]
    samples: list[Sample] = []
    step = rollout.micro_rollout_batch_size
    for start in range(0, len(expanded), step):
        chunk = expanded[start:start + step]
        generated = generate(
            model, tokenizer, [ex.prompt for ex in chunk], max_new_tokens=rollout.generate_max_len,
            temperature=rollout.temperature, top_p=rollout.top_p, prompt_max_len=rollout.prompt_max_len,
            sampler=sampler,
        )
        for ex, response, query in zip(chunk, generated.responses, generated.queries):
            samples.append(Sample(len(samples), ex.row, ex.prompt, ex.label, response, query))
    return samples


# ------------------------------------------------------------------------------------------------ control set
def derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation with no fixed point (for n >= 2): row i gets the label of row sigma[i] != i."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    sigma = list(range(n))
    for k in range(n):
        sigma[order[k]] = order[(k + 1) % n]
    return sigma


def control_samples(samples: list[Sample], check: CheckArgs, run: RunArgs) -> tuple[list[Sample], bool] | None:
    """Queries whose response does not answer their label, and whether the main run is the matched side.

    oracle: the control gives each prompt another row's label as response (the `shuffled` responses);
    shuffled: the control is the oracle responses (so the main run is the mismatched side);
    column/model: the same responses scored against another row's label.
    None when there are no labels to separate by (fewer than 2 rows, or all labels equal).
    """
    rows = sorted({s.row for s in samples})
    labels_by_row = {s.row: s.label for s in samples}
    if len(rows) < 2 or len(set(labels_by_row.values())) < 2:
        return None
    sigma = derangement(len(rows), run.seed)
    other = {row: labels_by_row[rows[sigma[k]]] for k, row in enumerate(rows)}
    kind, _ = response_mode(check.responses)
    if kind == "oracle":
        return [replace(s, response=other[s.row]) for s in samples], True
    if kind == "shuffled":
        return [replace(s, response=s.label) for s in samples], False
    return [replace(s, label=other[s.row]) for s in samples], True
