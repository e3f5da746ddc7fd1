"""Turn the schema's fields into Typer options, so every subcommand's flags come from config.py alone.

Only Typer's public API is used: a command is a plain function whose `__signature__` lists `Annotated[...,
typer.Option(...)]` parameters built from the fields. Every option defaults to None, meaning "not given", which is
how a flag beats the config file and the file beats the schema default.
"""

from __future__ import annotations

import inspect
import os
import sys
import types
import typing
from typing import Any, Callable, Literal, Optional

import typer
from pydantic import BaseModel

from rlhfctl.config import Group, dump_config, field_extra, flag_name, is_positional, resolve
from rlhfctl.config.aliases import aliases_of
from rlhfctl.errors import RlhfctlError

CONFIG_PANEL = "Config"


def _defining_group(cls: type[BaseModel], name: str) -> type[Group] | None:
    for base in cls.__mro__:
        if isinstance(base, type) and issubclass(base, Group) and name in base.__dict__.get("__annotations__", {}):
            return base
    return None


def _panel(cls: type[BaseModel], name: str) -> str:
    group = _defining_group(cls, name)
    return group.panel if group else "Options"


def _ordered_fields(cls: type[BaseModel]) -> list[tuple[str, Any]]:
    """Fields in the order the command lists its groups, so `--help` panels follow the class definition."""
    order = {base: i for i, base in enumerate(cls.__mro__)}
    fields = list(cls.model_fields.items())
    return sorted(fields, key=lambda item: order.get(_defining_group(cls, item[0]), len(order)))


def _cli_type(annotation: Any) -> tuple[Any, str]:
    """The type Typer parses a field's flag as, and a note for help (choices, list syntax)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _cli_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _cli_type(inner[0])
    if origin is Literal:
        return str, "|".join(typing.get_args(annotation))
    if origin in (list, tuple):
        return str, "comma-separated"
    if annotation in (bool, int, float, str):
        return annotation, ""
    return str, ""


def _default_text(value: Any) -> str:
    if value is None or value is ...:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _parameter(command: str, cls: type[BaseModel], name: str, info: Any) -> inspect.Parameter:
    extra = field_extra(info)
    typ, note = _cli_type(info.annotation)
    if extra.get("repeat"):  # a repeatable flag (a variadic argument): the field parses the list of texts
        typ, note = list[str], "repeatable"
    help_text = info.description or ""
    # Brackets are escaped: help is rendered as rich markup, where "[...]" would be a style tag.
    if note:
        help_text += f" \\[{note}]"
    aliases = aliases_of(command, name)
    if aliases:
        help_text += f" \\[OpenRLHF: {', '.join(aliases)}]"
    default = "" if info.is_required() else _default_text(info.default)
    if default:
        help_text += f" \\[default: {default}]"
    panel = _panel(cls, name)
    if is_positional(info, command):
        meta = typer.Argument(help=help_text, show_default=False, metavar=name.upper())
        if info.is_required():
            return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                     annotation=typing.Annotated[typ, meta])
        return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                 annotation=typing.Annotated[Optional[typ], meta])
    flag = flag_name(name, info)
    decls = [f"{flag}/--no-{flag[2:]}"] if typ is bool else [flag]
    meta = typer.Option(
        *decls, help=help_text, show_default=False, rich_help_panel=panel, envvar=extra.get("envvar"),
        show_envvar=bool(extra.get("envvar")),
    )
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=typing.Annotated[Optional[typ], meta]
    )


def _common_parameters() -> list[inspect.Parameter]:
    config = typer.Option(
        "--config", help="YAML file of options (flat, flag names as keys); flags given here beat it.",
        rich_help_panel=CONFIG_PANEL, show_default=False, metavar="FILE.yaml",
    )
    print_config = typer.Option(
        "--print-config", help="Print the resolved options as YAML (--config reads it back) and exit.",
        rich_help_panel=CONFIG_PANEL,
    )
    return [
        inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=typing.Annotated[Optional[str], config]),
        inspect.Parameter("print_config", inspect.Parameter.KEYWORD_ONLY, default=False,
                          annotation=typing.Annotated[bool, print_config]),
    ]


def report_error(exc: BaseException) -> None:
    from rich.console import Console

    console = Console(stderr=True)
    console.print(f"[bold red]Error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
    if not debug_enabled():
        console.print("[dim](set RLHFCTL_DEBUG=1 or pass --debug to see the traceback)[/]")


def report_warning(message: str) -> None:
    """One line on stderr, before the command starts: an option that cannot act here, and why."""
    from rich.console import Console

    Console(stderr=True).print(f"[bold yellow]Warning:[/] {message}", highlight=False, markup=True,
                               soft_wrap=True)


def debug_enabled() -> bool:
    return os.environ.get("RLHFCTL_DEBUG", "").lower() not in ("", "0", "false", "no")


def make_command(command: str, config_cls: type[BaseModel], run: Callable[[Any], int | None]) -> Callable[..., None]:
    """A Typer command function for `command`: parse flags, resolve with --config, then call `run(config)`."""
    fields = _ordered_fields(config_cls)
    positional = [_parameter(command, config_cls, n, i) for n, i in fields if is_positional(i, command)]
    options = [_parameter(command, config_cls, n, i) for n, i in fields if not is_positional(i, command)]

    def command_fn(**kwargs: Any) -> None:
        config_file = kwargs.pop("config", None)
        print_config = kwargs.pop("print_config", False)
        try:
            notes: list[str] = []
            cfg = resolve(command, kwargs, config_file, notes)
            for note in notes:
                report_warning(note)
            if print_config:
                sys.stdout.write(dump_config(cfg))
                return
            code = run(cfg)
        except RlhfctlError as exc:
            if debug_enabled():
                sys.stderr.write(getattr(exc, "remote_traceback", ""))  # a Ray worker's own traceback
                raise
            report_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            report_error(RlhfctlError("interrupted"))
            raise typer.Exit(130) from None
        if code:
            raise typer.Exit(code)

    command_fn.__signature__ = inspect.Signature(positional + options + _common_parameters())  # type: ignore[attr-defined]
    command_fn.__name__ = command.replace("-", "_")
    return command_fn
