"""Cross-field checks of the built-in reward sources: their options only where a term uses them, and `format`
only with its pattern. rules.py adds these to every command's problems."""

from __future__ import annotations

from typing import Optional

from rlhfctl.config.fields import Group, flag_name
from rlhfctl.config.verify_groups import SandboxArgs, VerifierArgs
from rlhfctl.rewards.terms import RewardTerm, has_kind_term

Terms = Optional[dict[str, RewardTerm]]


def _given(group: type[Group], cfg: Group) -> list[str]:
    fields = group.model_fields
    return [flag_name(n, fields[n]) for n in fields if getattr(cfg, n) != fields[n].default]


def builtin_problems(verifier: VerifierArgs, sandbox: SandboxArgs, terms: Terms) -> list[str]:
    """A `format` term needs --format-regex; verifier and sandbox options with no term to act on do nothing."""
    problems = []
    if has_kind_term(terms, "verifier", "format") and verifier.format_regex is None:
        problems.append("a reward SOURCE `format` checks responses against --format-regex PATTERN: give one")
    if verifier.format_regex is not None and not has_kind_term(terms, "verifier", "format"):
        problems.append("--format-regex applies to a reward SOURCE `format` only: add --reward NAME=format:WEIGHT")
    if not has_kind_term(terms, "verifier"):
        problems += [f"{flag} applies to the built-in verifiers only (--reward NAME=math|exact|format:WEIGHT)"
                     for flag in _given(VerifierArgs, verifier) if flag != "--format-regex"]
    if not has_kind_term(terms, "sandbox"):
        problems += [f"{flag} applies to the code sandbox only (--reward NAME=sandbox:WEIGHT)"
                     for flag in _given(SandboxArgs, sandbox)]
    return problems


def bench_sandbox_problems(terms: Terms) -> list[str]:
    """bench-rm's requests carry prompts (synthetic or --prompt-data) and no responses: no code to run."""
    if not has_kind_term(terms, "sandbox"):
        return []
    return ["bench-rm sends texts without responses, so the code sandbox would run no code: measure it with "
            "benchmarks/sandbox.py (samples/s), or check-reward sandbox --responses column:NAME (its speed check)"]
