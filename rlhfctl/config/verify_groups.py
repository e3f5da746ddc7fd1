"""Option groups of the built-in reward sources: the verifiers (`math`, `exact`, `format`) and the code sandbox.

Declarations only; their cross-field checks are in rules.py (builtin_problems).
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Optional

from pydantic import AfterValidator

from rlhfctl.config.fields import Group, opt


def _compiles(value: Optional[str]) -> Optional[str]:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"is not a regular expression: {exc}") from None
    return value


class VerifierArgs(Group):
    """The built-in verifiers of --reward NAME=math|exact|format:WEIGHT, run in worker processes a timeout kills."""

    panel: ClassVar[str] = "Built-in verifiers"
    verifier_timeout: float = opt(
        5.0, "Seconds a built-in verifier (math, exact, format) may spend on one sample: past it its worker process "
        "is killed, the sample scores 0 and NAME/timeout logs 1.", gt=0,
    )
    verifier_workers: int = opt(1, "Worker processes running the built-in verifiers (samples checked at once).", ge=1)
    format_regex: Annotated[Optional[str], AfterValidator(_compiles)] = opt(
        None, "The `format` verifier's pattern: a response scores 1 when all of it (stripped) matches, e.g. "
        r"'<think>.*</think>\s*\\boxed\{.+\}'.",
    )


class SandboxArgs(Group):
    """The code-execution reward of --reward NAME=sandbox:WEIGHT: each sample in its own isolated process."""

    panel: ClassVar[str] = "Code sandbox"
    sandbox_workers: int = opt(2, "Samples run at once by the code sandbox.", ge=1)
    sandbox_timeout: float = opt(
        5.0, "Wall-clock seconds one test run of a sample may take in the sandbox (then it is killed: a timeout).",
        gt=0,
    )
    sandbox_cpu_s: int = opt(2, "CPU seconds one test run may use (RLIMIT_CPU).", ge=1)
    sandbox_memory_mb: int = opt(512, "Address space of one test run, in MiB (RLIMIT_AS).", ge=32)
    sandbox_nproc: int = opt(16, "Most processes a sample's sandbox may hold at once (RLIMIT_NPROC).", ge=1)
    sandbox_file_mb: int = opt(
        16, "MiB a sample may write: each file (RLIMIT_FSIZE) and, isolated, its whole private /tmp (a tmpfs).", ge=1
    )
    sandbox_unsafe: bool = opt(
        False, "Run model-written code WITHOUT isolation where namespaces are not allowed (no network, mount and "
        "process isolation; rlimits and a temporary folder only). Only for code you trust.",
    )
