"""The command line as a user wrote it -> rlhfctl's own flags, before Typer parses it.

Launch scripts arrive in OpenRLHF's spellings (snake_case, v0.11's dotted groups, the two values of a pair as two
arguments); `translate_argv` maps them through the alias table (config_aliases) onto the schema's kebab-case flags,
so Typer only ever sees one spelling per option, and returns the warnings to print at start.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel

from rlhfctl.config import field_extra, flag_name, is_positional, key_of
from rlhfctl.config.aliases import Translation, lookup
from rlhfctl.errors import UsageError


# Options of every command that are not schema fields (cli/options.py adds them to each command).
_COMMON = ("config", "print_config")


def _nargs(annotation: Any) -> int | str:
    """Values a field's flag takes on the command line: 0 for a switch, "+" for a list or pair, else 1."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _nargs(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return _nargs([a for a in typing.get_args(annotation) if a is not type(None)][0])
    if annotation is bool:
        return 0
    return "+" if origin in (list, tuple) else 1


def _is_value(token: str) -> bool:
    """A token after an option that is its value: not an option, but "-10" and "-1e-3" are numbers."""
    if not token.startswith("-") or token == "-":
        return True
    try:
        [float(part) for part in token.split(",")]
        return True
    except ValueError:
        return False


def _take(argv: list[str], i: int, inline: str | None, nargs: int | str, option: str) -> tuple[list[str], int]:
    """The values of the option at argv[i] (`--x=1,2` or `--x 1 2`) and the index after them."""
    if inline is not None:
        if nargs == 0:
            raise UsageError(f"{option} is a switch: it takes no value (--no-... turns one of rlhfctl's off)")
        return (inline.split(",") if nargs != 1 else [inline]), i + 1
    if nargs == 0:
        return [], i + 1
    want = 1 if nargs == 1 else (nargs if isinstance(nargs, int) else len(argv))
    values = []
    j = i + 1
    while j < len(argv) and len(values) < want and (_is_value(argv[j]) or (nargs == 1 and not values)):
        values.append(argv[j])
        j += 1
    if not values:
        raise UsageError(f"{option} needs {'a value' if nargs == 1 else 'values'}")
    if len(values) == 1 and nargs not in (0, 1):  # the comma form: --reward-clip-range -10,10
        values = values[0].split(",")
    if isinstance(nargs, int) and len(values) != nargs:
        raise UsageError(f"{option} needs {nargs} value{'s' if nargs != 1 else ''}")
    return values, j


def translate_argv(argv: list[str], commands: dict[str, type[BaseModel]]) -> tuple[list[str], list[str]]:
    """A command line in any spelling -> rlhfctl's kebab-case flags, plus the warnings to print at start.

    OpenRLHF's spellings of three vintages go through the alias table (config_aliases): renamed, transformed
    (`--param_dtype bf16` -> `--bf16`), warned about or refused (exit 2). snake_case is kebab-case; a multi-value
    option takes OpenRLHF's separate values (`--reward_clip_range -10 10`) or the comma form. Tokens before the
    subcommand, positionals and unknown options pass through for Typer to handle."""
    at = next((i for i, token in enumerate(argv) if not token.startswith("-")), None)
    if at is None or argv[at] not in commands:
        return list(argv), []
    command, cls = argv[at], commands[argv[at]]
    flags = {name: info for name, info in cls.model_fields.items() if not is_positional(info, command)}
    kept, ours = list(argv[:at + 1]), {}
    translation = Translation()
    i = at + 1
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token == "--":
            kept.append(token)
            i += 1
            continue
        option, eq, inline = token.partition("=")
        entry = lookup(command, option)
        name = key_of(option)
        negated = name.startswith("no_") and name[3:] in flags and _nargs(flags[name[3:]].annotation) == 0
        if entry is not None:
            values, i = _take(argv, i, inline if eq else None, entry.nargs, option)
            translation.apply(entry, option, values)
        elif name in flags or negated:
            field = name[3:] if negated else name
            nargs = 0 if negated else _nargs(flags[field].annotation)
            values, i = _take(argv, i, inline if eq else None, nargs, option)
            if field_extra(flags[field]).get("repeat"):  # each occurrence counts (--reward a=... --reward b=...)
                kept += [flag_name(field, flags[field]), values[0]]
                continue
            value = (not negated) if nargs == 0 else ",".join(values)
            if field_extra(flags[field]).get("join") and field in ours and str(value).strip():
                value = f"{ours[field]},{value}"  # --remote-rm-url A --remote-rm-url B: replicas A,B
            ours[field] = value
        elif name in _COMMON:  # --print_config, --config=run.yaml: the options every command has, kebab-cased
            kept.append("--" + name.replace("_", "-") + eq + inline)
            i += 1
        else:
            kept.append(token)
            i += 1
    translation.finish(ours)
    for field, value in translation.merged_with(ours, lambda name: flag_name(name, cls.model_fields[name])).items():
        flag = flag_name(field, cls.model_fields[field])
        if isinstance(value, bool):
            kept.append(flag if value else f"--no-{flag[2:]}")
        else:
            kept += [flag, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    return kept, translation.notes
