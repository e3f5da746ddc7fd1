"""Files a test writes: a user's Python file or template, and a .jsonl dataset."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

# The rows of the `prompt_file` fixture (tests/conftest.py).
PROMPTS: list[dict] = [
    {"input": "What is 2 + 3?", "answer": "5"},
    {"input": "What is 10 - 4?", "answer": "6"},
    {"input": "What is 7 * 6?", "answer": "42"},
    {"input": "What is 9 + 9?", "answer": "18"},
    {"input": "What is 100 - 1?", "answer": "99"},
    {"input": "What is 3 * 3?", "answer": "9"},
]


def write(folder: Path, text: str, name: str = "reward_func.py") -> Path:
    """Write `text` (dedented, so a source can be indented in the test) to FOLDER/NAME; return that path."""
    path = Path(folder) / name
    path.write_text(textwrap.dedent(text))
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """One JSON object per line, as prompt datasets are."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
