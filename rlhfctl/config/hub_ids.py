"""A command's model options named by Hugging Face Hub ID, resolved to local folders once, where the run starts:
workers and spawned servers are then handed folders and never call the Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, TypeVar

from rlhfctl.config.fields import flag_name
from rlhfctl.config.groups import ModelLoadArgs
from rlhfctl.errors import UsageError
from rlhfctl.hub import resolve

M = TypeVar("M", bound=ModelLoadArgs)  # a command config: every command that loads a model has ModelLoadArgs


def resolve_fields(cfg: M, names: Iterable[str]) -> M:
    """`cfg` with each named model field (a folder or Hub ID; `responses` as model:NAME) replaced by a local folder.

    `--revision` applies to every field named by Hub ID; given where every model is a local folder, it is an
    error rather than an option silently ignored."""
    names = list(names)
    revision = cfg.revision
    updates: dict[str, Any] = {}
    from_hub = False
    for name in names:
        value = getattr(cfg, name)
        flag, prefix = flag_name(name, type(cfg).model_fields[name]), ""
        if name == "responses" and value is not None:
            kind, _, value = value.partition(":")
            if kind != "model":
                continue
            flag, prefix = "--responses model:", "model:"
        if value is None:
            continue
        from_hub = from_hub or not Path(value).expanduser().exists()
        updates[name] = prefix + resolve(value, flag=flag, revision=revision)
    if revision is not None and not from_hub:
        given = ", ".join(f"{n}={getattr(cfg, n)}" for n in names if getattr(cfg, n) is not None)
        raise UsageError(f"--revision {revision}: no model of this run is named by a Hub ID ({given or 'none'}); "
                         "a local folder has no revisions, so drop --revision")
    updates["revision"] = None  # applied: what is passed on (workers, a spawned serve-rm) names local folders
    return cfg.model_copy(update=updates)
