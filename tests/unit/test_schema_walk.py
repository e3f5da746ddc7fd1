"""No option is accepted and ignored: every field of every command is read by the code, and every alias-table
entry either sets a field of its command, warns, or refuses with a message.

Data-driven on purpose: a new field fails here until code reads it (or it joins COMPAT_ONLY with a reason), and a
new alias fails until its target exists. Re-run after merging branches that add fields.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import rlhfctl
from rlhfctl.config import COMMANDS
from rlhfctl.config.aliases import TABLES

PACKAGE = Path(rlhfctl.__file__).parent
# Where fields are declared, aliased and checked against each other, not used (config/slices.py and the other
# bundles do use them: what they read is handed to the code that acts on it).
SCHEMA_MODULES = {f"config/{name}.py" for name in ("fields", "groups", "train_groups", "verify_groups", "commands",
                                                   "rules", "verify_rules", "files", "aliases", "translation")}

# Fields read under another name: (file, the pattern that reads them).
READ_BY_PATTERN: dict[str, tuple[str, str]] = {}
# The policy loss reads the clip range through PPOArgs.clip_low_high (eps_clip, or clip-higher's pair).
READ_BY_PATTERN.update({name: ("ppo/workers.py", "ppo.clip_low_high") for name in ("eps_clip", "eps_clip_low_high")})

# Fields that exist for OpenRLHF compatibility and act only by printing their message. Each entry: why, and the
# text of the message that the code prints (checked to be in the source).
COMPAT_ONLY: dict[str, tuple[str, str]] = {
}


def _sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE)): p.read_text() for p in PACKAGE.rglob("*.py")
            if str(p.relative_to(PACKAGE)) not in SCHEMA_MODULES}


SOURCES = _sources()


def _read_somewhere(name: str) -> list[str]:
    pattern = re.compile(rf"\.{name}\b|getattr\([^)]*[\"']{name}[\"']|[\"']{name}[\"']")
    return [path for path, text in SOURCES.items() if pattern.search(text)]


FIELDS = sorted({(cmd, name) for cmd, cls in COMMANDS.items() for name in cls.model_fields})


@pytest.mark.parametrize("command, name", FIELDS, ids=[f"{c}:{n}" for c, n in FIELDS])
def test_every_field_is_read_by_the_code(command, name):
    if name in READ_BY_PATTERN:
        path, pattern = READ_BY_PATTERN[name]
        assert pattern in SOURCES[path], (name, path)
        return
    if name in COMPAT_ONLY:
        _, message = COMPAT_ONLY[name]
        assert not message or any(message in text for text in SOURCES.values()), name
        return
    assert _read_somewhere(name), f"{command} --{name.replace('_', '-')} is read by nothing under rlhfctl/"


def test_compat_only_fields_are_really_unread():
    """An entry of COMPAT_ONLY that code now reads is stale: take it out."""
    stale = [name for name in COMPAT_ONLY if _read_somewhere(name)]
    assert not stale, stale


ENTRIES = sorted((cmd, key) for cmd, table in TABLES.items() for key in table)


@pytest.mark.parametrize("command, key", ENTRIES, ids=[f"{c}:{k}" for c, k in ENTRIES])
def test_every_alias_entry_acts_warns_or_refuses(command, key):
    entry = TABLES[command][key]
    fields = COMMANDS[command].model_fields
    if entry.kind == "alias":
        assert entry.targets() or entry.convert, key  # a value check (e.g. lr_scheduler) sets nothing but refuses
        for target in entry.targets():
            assert target in fields, (key, target)
        # Never a second definition: a spelling that is a field name can only be a value check onto that field.
        assert key not in fields or entry.targets() == (key,), key
    else:
        assert entry.note, key
        assert key not in fields, key
    assert entry.nargs in (0, 1, 2, "+"), key
