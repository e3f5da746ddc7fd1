"""The real `rlhfctl` entry point, in this process (what a user sees, exit code included) or as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from tests.helpers.env import ENV


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `rlhfctl ARGS`, run in-process (snake_case mapping included)."""
    from rlhfctl.cli.app import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def rlhfctl(*args: str) -> list[str]:
    """The argv of `rlhfctl ARGS` as a subprocess of this interpreter."""
    return [sys.executable, "-m", "rlhfctl", *args]


def run_rlhfctl(*args: str, timeout: float = 240, env: dict[str, str] | None = None,
                **kwargs: Any) -> subprocess.CompletedProcess:
    """`rlhfctl ARGS` run to its end in a process of its own, output captured as text: forked from the preloaded
    forkserver (tests.helpers.forked) in the tests' ENV, or a new interpreter where `env` differs (it may change
    what an import reads) or `kwargs` (for subprocess.run) ask for more than a working directory."""
    if env is None and set(kwargs) <= {"cwd"}:
        from tests.helpers.forked import ForkedRun

        return ForkedRun(list(args), cwd=kwargs.get("cwd")).result(timeout)
    return subprocess.run(rlhfctl(*args), env=env or ENV, capture_output=True, text=True, timeout=timeout, **kwargs)
