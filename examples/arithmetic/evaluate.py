"""Held-out exact-match accuracy of a policy folder on the arithmetic task, by greedy decoding.

Greedy, because accuracy before and after RL must measure the policy, not the luck of a sample. Generation is
Hugging Face `generate` in batches, left-padded (prompts end where the answer starts), with the KV cache, and an
answer is scored by `reward_func.py`, so "correct" means here exactly what the reward pays for in training.

    python examples/arithmetic/evaluate.py examples/arithmetic/policy                # test.jsonl, all rows
    python examples/arithmetic/evaluate.py runs/ppo/final --data examples/arithmetic/test.jsonl --max-samples 200
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the sibling modules, also when this file is imported from elsewhere
    sys.path.insert(0, str(HERE))

from make_data import read_jsonl  # noqa: E402
from reward_func import reward_func  # noqa: E402

MAX_NEW_TOKENS = 6  # the longest answer, "198", is 3 characters + end-of-sequence; a little slack for babble


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    batch_size: int = 256,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[str]:
    """Greedy responses (prompt removed, special tokens dropped) for `prompts`, in order.

    Pads on the left (so every prompt ends where its answer starts) and leaves the tokenizer that way.
    """
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    responses: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        responses += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    model.train(was_training)
    return responses


def score(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict], *, batch_size: int = 256
) -> float:
    """Fraction of `rows` ({"input", "answer"}) whose greedy response the reward function pays 1 for."""
    if not rows:
        raise ValueError("no rows to evaluate")
    prompts = [r["input"] for r in rows]
    responses = generate(model, tokenizer, prompts, batch_size=batch_size)
    queries = [p + r for p, r in zip(prompts, responses)]
    rewards = reward_func(queries, prompts, [str(r["answer"]) for r in rows])["rewards"].tolist()
    return sum(rewards) / len(rewards)


def accuracy(policy_dir: str | Path, data_file: str | Path, max_samples: int | None = None) -> float:
    """Exact-match accuracy of the policy saved in `policy_dir` on the first `max_samples` rows of `data_file`."""
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    rows = read_jsonl(data_file)[:max_samples]
    return score(model, tokenizer, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy_dir", type=Path, help="a folder saved with save_pretrained (model + tokenizer)")
    parser.add_argument("--data", type=Path, default=HERE / "test.jsonl", help="a .jsonl file with input/answer")
    parser.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the cores this process owns)")
    parser.add_argument("--json", action="store_true", help="print {\"accuracy\": ...} instead of a sentence")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    acc = accuracy(args.policy_dir, args.data, args.max_samples)
    if args.json:
        print(json.dumps({"policy": str(args.policy_dir), "data": str(args.data), "accuracy": acc}))
    else:
        print(f"{args.policy_dir}: exact-match accuracy {acc:.1%} on {args.data}")


if __name__ == "__main__":
    main()
