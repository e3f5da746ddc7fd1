"""Options from a YAML file and the command line: precedence (flag > file > default), error messages that name the
flag or key as the user wrote it, and --print-config's YAML, which --config reads back."""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from rlhfctl.config.aliases import TABLES, Translation, lookup, spelling_key
from rlhfctl.config.commands import COMMANDS, Command
from rlhfctl.config.fields import field_extra, flag_name, key_of
from rlhfctl.config.rules import unused_messages
from rlhfctl.errors import ConfigError, UsageError


def all_fields() -> dict[str, Any]:
    """Every field of the schema by name: what a config file may contain, whichever command reads it."""
    fields: dict[str, Any] = {}
    for cls in COMMANDS.values():
        fields.update(cls.model_fields)
    return fields


def read_config_file(path: str | Path, command: str | None = None, notes: list[str] | None = None) -> dict[str, Any]:
    """A YAML mapping of schema keys (snake_case or kebab-case), or of `command`'s OpenRLHF spellings
    (config_aliases: `param_dtype: bf16`, `ds.zero_stage: 3`, `reward_clip_range: [-10, 10]`), which go through the
    same transforms as on the command line; their warnings are appended to `notes`. Unknown keys are errors; keys of
    other subcommands are kept (one file may serve all four) and ignored by commands that don't use them."""
    import yaml


    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: must be a mapping of option names to values, not {type(data).__name__}")
    known = all_fields()
    openrlhf = {key for table in TABLES.values() for key in table}
    out: dict[str, Any] = {}
    translation = Translation()
    unknown = []
    try:
        for raw, value in data.items():
            entry = lookup(command, str(raw)) if command else None
            key = key_of(str(raw))
            if entry is not None:
                translation.apply(entry, str(raw), _file_values(entry.nargs, str(raw), value))
            elif key in known:
                out[key] = value
            elif spelling_key(str(raw)) not in openrlhf:  # else another command's OpenRLHF spelling: not ours
                hint = difflib.get_close_matches(key, known, n=1)
                unknown.append(f"'{raw}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        translation.finish(out)
    except UsageError as exc:
        raise ConfigError(f"--config {path}: {exc}") from None
    if unknown:
        raise ConfigError(f"--config {path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
    try:
        merged = translation.merged_with(out, lambda name: f"'{name}'")
    except UsageError as exc:
        raise ConfigError(f"--config {path}: {exc}") from None
    if notes is not None:
        notes.extend(translation.notes)
    return merged


def _file_values(nargs: Any, key: str, value: Any) -> list[str] | None:
    """A config file's value of an OpenRLHF option as the strings its command-line form would have."""
    if nargs == 0:
        if not isinstance(value, bool):
            raise UsageError(f"'{key}' is a switch: give true or false, not {value!r}")
        return [] if value else None
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if nargs != 1 and isinstance(value, str):
        return [part.strip() for part in value.split(",")]
    return [str(value)]


def resolve(command: str, flags: dict[str, Any], config_file: str | Path | None = None,
            notes: list[str] | None = None) -> Command:
    """Defaults < config file < flags given on the command line (None means "not given"). Warnings about options
    that cannot act (an OpenRLHF option with no effect here, a model option given to a reward function) are appended
    to `notes`."""
    cls = COMMANDS[command]
    from_file = read_config_file(config_file, command, notes) if config_file else {}
    data = {k: v for k, v in from_file.items() if k in cls.model_fields}
    given = {key_of(k): v for k, v in flags.items() if v is not None}
    data.update(given)
    try:
        cfg = cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, cls, set(given), config_file)) from None
    if notes is not None:
        notes.extend(unused_messages(cfg, cfg.unused()))
    return cfg


def _explain(exc: ValidationError, cls: type[BaseModel], given: set[str], config_file: Any) -> str:
    """One message naming every bad flag or key, as the user wrote it, gathered rather than one per run."""
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"] if not isinstance(part, int)]
        msg = err["msg"].removeprefix("Value error, ")
        if not loc:
            lines.extend(msg.split("\n"))
            continue
        name = loc[0]
        info = cls.model_fields.get(name)
        where = flag_name(name, info) if info else name
        if name not in given and config_file:
            where = f"'{name}' in {config_file}"
        if err["type"] == "missing":
            msg = "is required"
        if len(loc) > 1:  # inside a nested value (--reward's terms): name the part, e.g. acc.weight
            msg = f"{'.'.join(loc[1:])}: {msg}"
        shown = err.get("input")
        value = f" (got {shown!r})" if err["type"] != "missing" and not isinstance(shown, dict) else ""
        lines.append(f"{where}: {msg}{value}")
    return "invalid options:\n  " + "\n  ".join(lines) if len(lines) > 1 else "invalid option: " + lines[0]


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML that --config accepts back (secrets are left out)."""
    import yaml

    data = {}
    omitted = []
    plain = cfg.model_dump()  # nested models (--reward's terms) as mappings
    for name, info in type(cfg).model_fields.items():
        value = plain[name]
        if field_extra(info).get("secret"):
            if value is not None:
                omitted.append(name)
            continue
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, float) and math.isinf(value):
            value = None
        data[name] = value
    class Dumper(yaml.SafeDumper):
        """One `key: value` line per option, lists inline (`[-10.0, 10.0]`), for a file people read and edit."""

    Dumper.add_representer(list, lambda dumper, seq: dumper.represent_sequence("tag:yaml.org,2002:seq", seq,
                                                                               flow_style=True))
    text = yaml.dump(data, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=120)
    if omitted:
        text += "".join(f"# {name}: omitted (secret)\n" for name in omitted)
    return text
