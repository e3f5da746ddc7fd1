"""What the code sandbox runs: the program in a response, and the tests in a label, in the formats users have.

Pure parsing, nothing is executed here. Tests come as
- stdin/stdout pairs: `[{"input": "1 2\\n", "output": "3\\n"}, ...]`;
- verl / sandbox-fusion style `{"inputs": [...], "outputs": [...]}`: stdin and expected stdout strings, or, with
  `"fn_name"`, argument lists and return values of that function (a return value may come wrapped in a list of one,
  as APPS and TACO write it);
- assert statements: a JSON list of them, or plain text where each line starting with `assert` is one test and the
  other lines (imports, helpers) run before each.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)


@dataclass
class TestSuite:
    """`io` tests are (stdin, expected stdout) pairs; `assert` tests are statements run after the program."""

    kind: Literal["io", "assert"]
    cases: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.cases)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "cases": self.cases}


class LabelError(ValueError):
    """A label that holds no tests in a known format (a dataset problem, reported, never scored 0 in silence)."""


def extract_code(response: str) -> str:
    """The last ```python block of a response, else its last unlabelled ``` block, else the whole response."""
    blocks = _FENCE.findall(response)
    python = [body for lang, body in blocks if lang.lower() in ("python", "python3", "py")]
    plain = [body for lang, body in blocks if not lang]
    return (python or plain or [response])[-1].strip("\n")


def _call_asserts(fn_name: str, inputs: list[Any], outputs: list[Any]) -> list[str]:
    tests = []
    for args, expected in zip(inputs, outputs):
        args = args if isinstance(args, list) else [args]
        tests.append(f"__result = {fn_name}(*{args!r})\n"
                     f"assert __result == {expected!r} or [__result] == {expected!r}")
    return tests


def _from_json(value: Any) -> TestSuite | None:
    if isinstance(value, dict) and "inputs" in value and "outputs" in value:
        inputs, outputs = value["inputs"], value["outputs"]
        if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
            raise LabelError("'inputs' and 'outputs' must be lists of the same length")
        if value.get("fn_name"):
            return TestSuite("assert", _call_asserts(str(value["fn_name"]), inputs, outputs))
        return TestSuite("io", [[_text(i), _text(o)] for i, o in zip(inputs, outputs)])
    if isinstance(value, list) and value and all(isinstance(t, dict) and "input" in t and "output" in t
                                                  for t in value):
        return TestSuite("io", [[_text(t["input"]), _text(t["output"])] for t in value])
    if isinstance(value, list) and value and all(isinstance(t, str) for t in value):
        return TestSuite("assert", list(value))
    return None


def _text(value: Any) -> str:
    if isinstance(value, list):  # a stdin given as lines
        return "\n".join(str(v) for v in value) + "\n"
    return str(value)


def parse_tests(label: str) -> TestSuite:
    """The tests a label holds; LabelError when it holds none in a known format."""
    text = label.strip()
    if text[:1] in "[{":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabelError(f"looks like JSON but is not: {exc}") from None
        suite = _from_json(value)
        if suite is None:
            raise LabelError("JSON tests must be {\"inputs\": [...], \"outputs\": [...]}, a list of "
                             "{\"input\", \"output\"} pairs, or a list of assert statements")
        return suite
    lines = text.splitlines()
    asserts = [line for line in lines if line.lstrip().startswith("assert")]
    if not asserts:
        raise LabelError("holds no tests: give assert lines, stdin/stdout pairs or {\"inputs\", \"outputs\"} JSON")
    setup = "\n".join(line for line in lines if not line.lstrip().startswith("assert"))
    return TestSuite("assert", [f"{setup}\n{line.strip()}" if setup.strip() else line.strip() for line in asserts])
