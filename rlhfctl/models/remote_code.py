"""Reward models that ship their own modelling code (config.json `auto_map`, as ArmoRM's): refused unless the user
passed --trust-remote-code, and named loudly once when it is on. No torch here: the driver checks before loading."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from rlhfctl.errors import UsageError

log = logging.getLogger("rlhfctl")
_announced: set[str] = set()


def model_auto_map(config: dict[str, Any]) -> dict[str, str]:
    """The model classes a config.json maps to code in its own folder (tokenizer entries aside)."""
    amap = config.get("auto_map") or {}
    return {k: v for k, v in amap.items() if isinstance(v, str) and k.startswith(("AutoModel", "AutoConfig"))}


def code_files(folder: Path, config: dict[str, Any]) -> list[str]:
    """The .py files of the folder that the auto_map entries name (`modeling_x.Class` -> modeling_x.py)."""
    names = {ref.split("--")[-1].rsplit(".", 1)[0] + ".py" for ref in model_auto_map(config).values()}
    return sorted(names)


def read_config(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}  # the loader reports a missing or broken config.json itself


def check_trust(folder: str | Path, trust_remote_code: bool, flag: str = "--reward-pretrain") -> bool:
    """Whether `folder` carries its own code; a UsageError when it does and --trust-remote-code is off."""
    folder = Path(folder)
    config = read_config(folder)
    if not model_auto_map(config):
        return False
    files = ", ".join(code_files(folder, config)) or "its auto_map"
    if not trust_remote_code:
        raise UsageError(f"{flag} {folder}: the model ships its own Python code ({files}, named by config.json's "
                         "auto_map), which runs only with --trust-remote-code; read it first: it runs with your "
                         "rights")
    return True


def announce(folder: str | Path, trust_remote_code: bool, flag: str = "--reward-pretrain") -> None:
    """Say once, as a warning, which folder's code will run (call where the run starts, not in every worker)."""
    if not check_trust(folder, trust_remote_code, flag) or str(folder) in _announced:
        return
    _announced.add(str(folder))
    files = ", ".join(code_files(Path(folder), read_config(Path(folder))))
    log.warning("--trust-remote-code: running the Python code in %s (%s) with your rights", folder, files)
