"""Math answer equivalence: is the final answer of a response the same number or expression as the label?

Pure functions, no reward code. Numbers are compared exactly as fractions (`0.5`, `1/2`, `\\frac{1}{2}`, `50%`,
`1,000`), anything else symbolically with sympy when it is installed (torch depends on it), else as normalised text.
A crafted expression can make sympy run for minutes: callers run this in a process a timeout can kill
(rewards/verifiers.py).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Optional

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_MARKERS = re.compile(r"(?:final answer|answer)\s*(?:is|:)?\s*[:=]?\s*(.+)$|####\s*(.+)$", re.I | re.M)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?(?:/\d+)?%?|-?\.\d+%?")
_THOUSANDS = re.compile(r"(?<![\d.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])")
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_DROP = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ ", "$", "\\displaystyle", "^\\circ", "^{\\circ}",
         "\\%")


def braced(text: str, start: int) -> tuple[str, int] | None:
    """The text inside the brace group opening at text[start] == '{', and the index after its closing brace."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1:i], i + 1
    return None


def final_answer(response: str) -> str:
    """The answer a response gives: its last \\boxed{...}, else what follows its last "answer is" / "Answer:" /
    "####", else its last number, else the whole response."""
    boxes = list(_BOXED.finditer(response))
    if boxes:
        inside = braced(response, boxes[-1].end() - 1)
        if inside is not None:
            return inside[0].strip()
    marked = list(_MARKERS.finditer(response))
    if marked:
        return (marked[-1].group(1) or marked[-1].group(2)).strip().rstrip(".")
    numbers = _NUMBER.findall(response)
    return numbers[-1] if numbers else response.strip()


def normalize(answer: str) -> str:
    """Simple LaTeX and typography out: \\left, \\!, $, \\text{units} (an answer that is all \\text{} keeps its text),
    \\dfrac, thousands separators, a trailing full stop, `x =` in front."""
    whole = _TEXT.fullmatch(answer.strip())
    text = whole.group(1) if whole else _TEXT.sub(  # a word beside a number is a unit: 5 \text{ cm} -> 5
        lambda m: "" if re.fullmatch(r"\s*[A-Za-z ]+\s*", m.group(1)) else m.group(1), answer)
    for token in _DROP:
        text = text.replace(token, "%" if token == "\\%" else "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("−", "-")
    text = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), text)
    text = re.sub(r"^\s*[A-Za-z]\w*\s*=\s*", "", text.strip())
    return text.strip().rstrip(".").strip()


def as_number(text: str) -> Optional[Fraction]:
    """An exact value for a plain number: integer, decimal, a/b, \\frac{a}{b}, scientific notation or a
    percentage (as its share: 50% -> 1/2); None for anything else."""
    t = text.replace(" ", "")
    if t.endswith("%"):
        value = as_number(t[:-1])
        return None if value is None else value / 100
    frac = re.fullmatch(r"(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}", t) or \
        re.fullmatch(r"(-?)\\frac(\d)(\d)", t)
    try:
        if frac:
            value = Fraction(frac.group(2)) / Fraction(frac.group(3))
            return -value if frac.group(1) else value
        if re.fullmatch(r"-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|-?\.\d+", t):
            return Fraction(t)
        if re.fullmatch(r"-?\d+/-?\d+", t):
            return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _to_sympy_syntax(text: str) -> str:
    """LaTeX a model writes (\\frac, \\sqrt, \\cdot, \\pi, ^) as sympy's parser reads it."""
    out = text
    for _ in range(8):  # nested \frac / \sqrt, innermost first
        new = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", out)
        new = re.sub(r"\\sqrt\[([^{}\]]*)\]\{([^{}]*)\}", r"((\2)**(1/(\1)))", new)
        new = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", new)
        if new == out:
            break
        out = new
    out = re.sub(r"\\sqrt(\d)", r"sqrt(\1)", out)
    for latex, plain in (("\\cdot", "*"), ("\\times", "*"), ("\\div", "/"), ("\\pi", "pi"), ("\\infty", "oo"),
                         ("^", "**"), ("{", "("), ("}", ")"), ("\\", "")):
        out = out.replace(latex, plain)
    return out


_FUNCTIONS = {"sqrt", "pi", "oo", "sin", "cos", "tan", "log", "ln", "exp"}


def _reads_as_math(text: str) -> bool:
    """No word but a known function: sympy would read `cat` as c*a*t, equal to `act`."""
    return all(word in _FUNCTIONS for word in re.findall(r"[A-Za-z]{2,}", text))


def _sympy_equal(a: str, b: str) -> Optional[bool]:
    """Symbolic equality (simplify(a - b) == 0); None when sympy is missing or cannot read either side."""
    a, b = _to_sympy_syntax(a), _to_sympy_syntax(b)
    if not (_reads_as_math(a) and _reads_as_math(b)):
        return None
    try:
        import sympy
        from sympy.parsing.sympy_parser import (implicit_multiplication_application, parse_expr,
                                                standard_transformations)
    except ImportError:
        return None
    transformations = standard_transformations + (implicit_multiplication_application,)
    try:
        left: Any = parse_expr(a, transformations=transformations, evaluate=True)
        right: Any = parse_expr(b, transformations=transformations, evaluate=True)
        return bool(sympy.simplify(left - right) == 0)
    except Exception:  # noqa: BLE001 - sympy raises many types on text it cannot read; that is "not known"
        return None


def _split_top(text: str) -> list[str]:
    """`(1, 2)` or `1, 2` -> ['1', '2']: commas outside brackets (thousands separators are gone by now)."""
    inner = text[1:-1] if len(text) > 1 and text[0] + text[-1] in ("()", "[]", "\\{\\}") else text
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(inner[start:i].strip())
            start = i + 1
    parts.append(inner[start:].strip())
    return parts


def _one_equal(a: str, b: str) -> bool:
    if a == b:
        return True
    x, y = as_number(a), as_number(b)
    if x is not None and y is not None:
        if x == y:
            return True
        # 50% is also written 50: with a percentage on one side, the bare numbers may be compared
        return (a.endswith("%") or b.endswith("%")) and as_number(a.rstrip("%")) == as_number(b.rstrip("%"))
    if a.replace(" ", "").lower() == b.replace(" ", "").lower():
        return True
    return bool(_sympy_equal(a, b))


def equivalent(response_answer: str, label: str) -> bool:
    """Whether two answers are the same value: numbers exactly, tuples element by element, else symbolically."""
    a, b = normalize(response_answer), normalize(label)
    if not a or not b:
        return False
    if _one_equal(a, b):
        return True
    left, right = _split_top(a), _split_top(b)
    return len(left) == len(right) > 1 and all(_one_equal(x, y) for x, y in zip(left, right))
