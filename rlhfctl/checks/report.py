"""What check-reward found: named checks with a status, plus the figures behind them; rendered by render.py.

Kept free of rich and of the reward machinery so the library API (`run_checks`) and `--json` share one object.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["pass", "warn", "fail", "skip"]

# The order checks are shown in; a check that never ran is simply absent.
ORDER = (
    "load", "signature", "data", "contract", "exceptions", "timeout",
    "determinism", "constant", "zeros", "separation", "pairwise", "speed",
)


def finding(strict: bool) -> Status:
    """The status of a behaviour finding: a warning, or a failure under --strict."""
    return "fail" if strict else "warn"


@dataclass
class Check:
    """One check: `name` from ORDER, a one-line `message`, and `details` (failing samples, tracebacks)."""

    name: str
    status: Status
    message: str
    details: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Report:
    reward: str
    responses: str
    checks: list[Check] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)  # reward statistics of the main run
    histogram: dict[str, Any] = field(default_factory=dict)  # {"edges": [...], "counts": [...]}
    worst: list[dict[str, Any]] = field(default_factory=list)  # the samples most worth a look
    timing: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, status: Status, message: str, details: list[dict[str, Any]] | None = None) -> Check:
        check = Check(name, status, message, details or [])
        self.checks.append(check)
        return check

    def get(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def ordered(self) -> list[Check]:
        rank = {name: i for i, name in enumerate(ORDER)}
        return sorted(self.checks, key=lambda c: rank.get(c.name, len(rank)))

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "warn": 0, "fail": 0, "skip": 0}
        for check in self.checks:
            out[check.status] += 1
        return out

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed (warnings allowed; --strict has already turned them into failures), else 1."""
        return 0 if self.ok else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "reward": self.reward,
            "responses": self.responses,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "summary": self.counts(),
            "checks": [asdict(c) for c in self.ordered()],
            "stats": self.stats,
            "histogram": self.histogram,
            "worst": self.worst,
            "timing": self.timing,
            "data": self.data,
        }
