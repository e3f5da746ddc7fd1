"""Write the arithmetic task: two-digit additions and subtractions as prompts with an `answer` label.

A prompt is the bare equation ("12+35="), the response the answer then end-of-sequence ("47</s>"): a character-level
policy of about a million parameters learns that format in seconds, so what it still has to learn, and what RL can
teach it, is the arithmetic itself. Subtractions keep a >= b so every answer is a plain non-negative number.
The split is by problem: no (a, op, b) of test.jsonl is in train.jsonl, so held-out accuracy measures arithmetic,
not memory. Deterministic: the same seed writes byte-identical files.

    python examples/arithmetic/make_data.py            # writes train.jsonl and test.jsonl next to this file
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Iterable

HERE = Path(__file__).resolve().parent
ALPHABET = "0123456789+-="  # every character a prompt or an answer can contain
N_TRAIN = 4000
N_TEST = 400
SEED = 1234


def all_problems() -> list[tuple[int, str, int]]:
    """Every (a, op, b) with a, b two-digit: all additions, and the subtractions with a non-negative result."""
    adds = [(a, "+", b) for a in range(10, 100) for b in range(10, 100)]
    subs = [(a, "-", b) for a in range(10, 100) for b in range(10, a + 1)]
    return adds + subs


def solve(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def to_row(a: int, op: str, b: int) -> dict[str, str]:
    """One dataset row: the prompt under `input` (OpenRLHF's default --input-key), the label under `answer`."""
    return {"input": f"{a}{op}{b}=", "answer": str(solve(a, op, b))}


def split(seed: int = SEED, n_train: int = N_TRAIN, n_test: int = N_TEST) -> tuple[list[dict], list[dict]]:
    """Disjoint train and test rows, half additions and half subtractions in each, in a seeded random order."""
    rng = random.Random(seed)
    by_op: dict[str, list[tuple[int, str, int]]] = {"+": [], "-": []}
    for problem in all_problems():
        by_op[problem[1]].append(problem)
    train: list[tuple[int, str, int]] = []
    test: list[tuple[int, str, int]] = []
    for op in ("+", "-"):
        pool = by_op[op]
        rng.shuffle(pool)
        test += pool[: n_test // 2]
        train += pool[n_test // 2 : n_test // 2 + n_train // 2]
    rng.shuffle(train)
    rng.shuffle(test)
    return [to_row(*p) for p in train], [to_row(*p) for p in test]


def write_jsonl(rows: Iterable[dict], path: Path) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a .jsonl file (the other scripts of this example read their data through here)."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE, help="folder for train.jsonl and test.jsonl")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the shuffle (the split and the row order)")
    parser.add_argument("--n-train", type=int, default=N_TRAIN, help="training rows (half of them additions)")
    parser.add_argument("--n-test", type=int, default=N_TEST, help="held-out rows (half of them additions)")
    args = parser.parse_args(argv)
    train, test = split(args.seed, args.n_train, args.n_test)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(train, args.out_dir / "train.jsonl")
    write_jsonl(test, args.out_dir / "test.jsonl")
    print(f"wrote {len(train)} rows to {args.out_dir / 'train.jsonl'} and {len(test)} to {args.out_dir / 'test.jsonl'}")


if __name__ == "__main__":
    main()
