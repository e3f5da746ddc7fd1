"""The field helper every option group is declared with, and the metadata the CLI and config files read from it.

Field metadata keys (json_schema_extra): "flag" overrides the flag name, "positional" makes an argument (True: in
every command; a command's name: in that one), "repeat" makes a repeatable flag (a variadic argument), "envvar" names
an environment variable, "secret" keeps the value out of --print-config, "join" joins a flag given several times with
commas (one text, so the single-value flag of OpenRLHF keeps its meaning). Other spellings of an option (OpenRLHF's,
older rlhfctl names) live in one table, aliases.py.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Optional

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field


def split_commas(value: Any) -> Any:
    """Lists come from the command line as '1,8,32'; YAML may give a real list or a number."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (int, float)):
        return [value]
    return value


def join_commas(value: Any) -> Any:
    """A list in YAML (several URLs) -> the comma-separated text the command line gives."""
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value


IntList = Annotated[list[int], BeforeValidator(split_commas)]
FloatPair = Annotated[tuple[float, float], BeforeValidator(split_commas)]


def opt(default: Any, help: str, **kw: Any) -> Any:
    """A schema field: its default, its one help text (shown by --help, docs and --print-config) and its limits."""
    extra = {k: kw.pop(k) for k in ("flag", "positional", "envvar", "secret", "repeat", "join") if k in kw}
    return Field(default, description=help, json_schema_extra=extra or None, **kw)


def not_blank(what: str) -> AfterValidator:
    """An option given as "" (or only commas and spaces) is a mistake, not "leave it out"."""
    def check(value: Optional[str]) -> Optional[str]:
        if value is not None and not value.replace(",", "").strip():
            raise ValueError(f"is empty: give {what}, or leave the option out")
        return value

    return AfterValidator(check)


class Group(BaseModel):
    """An argument group: a titled panel of related options in `--help`, and the typed slice of a command's options
    that a function below the CLI receives (`Command.slice`)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    panel: ClassVar[str] = "Options"


def field_extra(info: Any) -> dict[str, Any]:
    return dict(info.json_schema_extra or {})


def is_positional(info: Any, command: str) -> bool:
    """A field is an argument, not a flag, in every command ("positional": True) or in the one it names."""
    where = field_extra(info).get("positional")
    return where is True or where == command


def flag_name(name: str, info: Any) -> str:
    """The long flag of a field: `--train-batch-size`, or an override such as `--json`."""
    return "--" + field_extra(info).get("flag", name).replace("_", "-")


def key_of(raw: str) -> str:
    """A config key or flag as written (`--remote-rm-url`, `remote-rm-url`, `remote_rm_url`) -> field name."""
    key = raw.lstrip("-").replace("-", "_")
    return "json_output" if key == "json" else key
