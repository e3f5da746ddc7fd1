"""Ray workers are called through their own methods, never by a string, and the PPO loop's parts talk through
interfaces, not each other's privates (issue 21, items 3 and 4)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from rlhfctl.distributed.roles import RoleGroup
from rlhfctl.ppo.workers import CriticWorker, PolicyWorker, ReferenceWorker
from tests.helpers import ROOT

PACKAGE = ROOT / "rlhfctl"

# A worker method named by a string: `w.call.remote("train", ...)`, `h.remote("name")`, `call_all("name")`,
# `_forward(role, "log_probs", ...)`.
STRING_CALLS = re.compile(r"""\.call\.remote\(|\.remote\(\s*["']|\bcall_(all|each)\(|_forward\([^)]*["']""")


def package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_worker_method_is_named_by_a_string():
    found = [f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
             for path in package_files() for n, line in enumerate(path.read_text().splitlines(), 1)
             if STRING_CALLS.search(line)]
    assert not found, "\n".join(found)


def test_the_pattern_finds_what_it_forbids():
    for line in ['w.call.remote("train", shard, step)', "handle.remote('log_probs')",
                 'group.call_all("save_checkpoint", path)', '_forward(self.roles.actor, "log_probs", samples)']:
        assert STRING_CALLS.search(line), line
    assert not STRING_CALLS.search("actor.all(PolicyWorker.save_checkpoint, path)")


def test_no_module_calls_the_trainers_privates_and_the_async_loop_does_not_import_it():
    private_use = []
    for path in package_files():
        if path.name == "trainer.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "rlhfctl.ppo.trainer" and path.name == "async_loop.py":
                private_use.append(f"{path.name} imports the trainer")
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and isinstance(node.value, ast.Name) and node.value.id == "trainer":
                private_use.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: trainer.{node.attr}")
    assert not private_use, private_use


def unstarted_group(role: str, worker_cls: type) -> RoleGroup:
    """A RoleGroup's driver-side state only: the method check runs before anything reaches Ray."""
    group = RoleGroup.__new__(RoleGroup)
    group.role, group.worker_cls, group.workers = role, worker_cls, []
    return group


def test_a_method_of_another_worker_class_fails_where_it_is_called():
    with pytest.raises(TypeError, match=r"'CriticWorker.values' is not a method of the ref workers \(ReferenceWorker\)"):
        unstarted_group("ref", ReferenceWorker).all(CriticWorker.values, None, None, 1)
    with pytest.raises(AttributeError):
        PolicyWorker.log_prob  # noqa: B018 - a misspelt method fails in the driver, at the call site


def test_inherited_methods_are_the_workers_own():
    group = unstarted_group("actor", PolicyWorker)
    assert group.all(PolicyWorker.train, None, 0) == []  # _TrainedWorker.train: no worker, no call, no error
