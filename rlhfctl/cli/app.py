"""The `rlhfctl` binary: wires the four subcommands; each lives in its own thin module."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from rlhfctl import __version__
from rlhfctl.cli import bench_rm, check_reward, serve_rm, train_ppo
from rlhfctl.cli.argv import translate_argv
from rlhfctl.cli.options import make_command, report_error, report_warning
from rlhfctl.config import COMMANDS
from rlhfctl.config.aliases import TABLES
from rlhfctl.errors import UsageError

SUBCOMMANDS = {"serve-rm": serve_rm, "train-ppo": train_ppo, "check-reward": check_reward, "bench-rm": bench_rm}

app = typer.Typer(
    name="rlhfctl",
    help="RLHF with the reward on a separate server: serve a reward, check it against labels, benchmark it, and "
    "train a policy against it with PPO on Ray.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rlhfctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks (or set RLHFCTL_DEBUG=1).")] = False,
) -> None:
    if debug:
        import os

        os.environ["RLHFCTL_DEBUG"] = "1"


_OPENRLHF = (
    "\n\nOpenRLHF's option names of v0.8.9, v0.10 and v0.11 (snake_case, dotted) work too and are listed under each "
    "option; those with no effect here warn at start, those for features rlhfctl lacks exit 2 naming them (README: "
    "Coming from OpenRLHF)."
)


def _examples(lines: list[str]) -> str:
    return "[bold]Examples[/]\n\n" + "\n\n".join(f"  [cyan]$ {line}[/]" for line in lines)


for _name, _module in SUBCOMMANDS.items():
    app.command(
        _name,
        help=_module.HELP,
        epilog=_examples(_module.EXAMPLES) + (_OPENRLHF if _name in TABLES else ""),
        no_args_is_help=_name != "serve-rm",
    )(make_command(_name, COMMANDS[_name], _module.run))


def _take_ctrl_c() -> None:
    """Make SIGINT raise KeyboardInterrupt even when the launcher ignored or blocked it.

    A command started with `&` by a non-interactive shell (a CI script, `nohup ... &`) inherits SIGINT ignored, and
    Python then installs no handler: train-ppo would never see Ctrl-C or `kill -INT`, train to the end and exit 0
    instead of saving a checkpoint and exiting 130. serve-rm installs its own handler for the same reason."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return  # main() called from a thread (tests): signals are the main thread's business
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point. OpenRLHF launch-script spellings (snake_case, v0.11's dotted names, separate values of
    a pair) are translated to rlhfctl's flags first; an option for a feature rlhfctl lacks exits 2 here."""
    _take_ctrl_c()
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        args, notes = translate_argv(args, COMMANDS)
    except UsageError as exc:
        report_error(exc)
        raise SystemExit(exc.exit_code) from None
    for note in notes:
        report_warning(note)
    app(args=args, prog_name="rlhfctl")
