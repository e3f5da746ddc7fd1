"""The arithmetic demo's shipped models, measured: the figures README.md quotes about them, as one JSON line.

- the policy's size and held-out exact match (greedy, all of test.jsonl: the demo's "before RL");
- the reward model's held-out pairwise accuracy (right answer above a wrong one, and above the forgotten carry),
  computed as examples/arithmetic/train_models.py computes it;
- the judge's held-out verdict accuracy (P("1") above P("0") exactly when the answer is right, half right and half
  wrong answers), as train_models.py --judge computes it;
- with --check-plateau STEPS: the policy's supervised training re-run from scratch (deterministic, --threads
  threads) and STEPS more steps on the same data, and how many points they add (several minutes: opt-in).

    python benchmarks/arithmetic_models.py                       # the shipped models only (seconds)
    python benchmarks/arithmetic_models.py --check-plateau 1200  # + the plateau check (minutes)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ARITH = Path(__file__).resolve().parents[1] / "examples" / "arithmetic"
sys.path.insert(0, str(ARITH))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check-plateau", type=int, default=0, metavar="STEPS",
                        help="re-run the policy's SFT and this many more steps; print the points they add")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (train_models.py's default: 1)")
    args = parser.parse_args(argv)
    if args.check_plateau < 0 or args.threads < 1:
        parser.error("--check-plateau must be 0 or more and --threads at least 1")

    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    import train_models
    from evaluate import accuracy
    from make_data import read_jsonl

    torch.set_num_threads(args.threads)
    test_file = ARITH / "test.jsonl"
    test = read_jsonl(test_file)
    rm_dir = ARITH / "reward_model"
    rm = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    pairwise = train_models.pairwise_accuracy(rm, AutoTokenizer.from_pretrained(rm_dir), test, train_models.SEED)
    result = {
        "benchmark": "arithmetic_models", "held_out_rows": len(test),
        "policy_parameters": AutoModelForCausalLM.from_pretrained(ARITH / "policy").num_parameters(),
        "policy_accuracy": accuracy(ARITH / "policy", test_file),
        "reward_model_pairwise_accuracy": round(pairwise["any_wrong"], 4),
        "reward_model_beats_forgotten_carry": round(pairwise["forgot_carry"], 4),
    }
    judge_dir = ARITH / "judge"
    if judge_dir.is_dir():
        judge = AutoModelForCausalLM.from_pretrained(judge_dir).eval()
        result["judge_verdict_accuracy"] = round(train_models.judge_accuracy(
            judge, AutoTokenizer.from_pretrained(judge_dir), test, train_models.SEED), 4)
    if args.check_plateau:
        torch.use_deterministic_algorithms(True)
        tokenizer = train_models.build_char_tokenizer(train_models.ALPHABET)
        train = read_jsonl(ARITH / "train.jsonl")
        _, curve = train_models.train_policy(tokenizer, train, test, seed=train_models.SEED,
                                             extra_steps=args.check_plateau, log=lambda _: None)
        at = dict(curve)
        shipped_steps = train_models.SFT["steps"]
        result.update(sft_steps=shipped_steps, sft_accuracy=at[shipped_steps], extra_sft_steps=args.check_plateau,
                      extra_sft_accuracy=curve[-1][1],
                      plateau_gain_points=round(100 * (curve[-1][1] - at[shipped_steps]), 1), threads=args.threads)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
