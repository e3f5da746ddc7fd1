"""Run the real `rlhfctl` entry point in-process (snake_case mapping included) and capture what a user sees."""

from __future__ import annotations

from rlhfctl.cli.app import main


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `rlhfctl ARGS`."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err
