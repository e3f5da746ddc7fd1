"""`from openrlhf.utils.agent import ...` inside an agent_func.py, answered with rlhfctl's own base classes.

OpenRLHF users' agent files import its base classes by OpenRLHF's module path; rlhfctl does not ship OpenRLHF and
must not install a package of that name (it would shadow a real OpenRLHF and change every other import of it). So
the names exist only while one agent file is being executed: a meta-path finder placed first answers
`openrlhf`, `openrlhf.utils` and `openrlhf.utils.agent` with small modules holding rlhfctl's classes, and on leaving
the block the finder and those modules are gone and whatever `sys.modules` held under those names is back.
Any other `openrlhf.*` import inside the file still fails (the loader names the line), and an import of
`openrlhf.utils.agent` run later, from inside a function of the file, fails too: only the file's top level is
covered, as that is where OpenRLHF's examples import.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Iterator
from typing import Any, Optional, Sequence

AGENT_MODULE = "openrlhf.utils.agent"
_PACKAGES = ("openrlhf", "openrlhf.utils")


def _agent_module() -> types.ModuleType:
    from rlhfctl import agents

    module = types.ModuleType(AGENT_MODULE, "rlhfctl.agents' classes under OpenRLHF's module path (agent files only)")
    for name in ("AgentExecutorBase", "AgentInstanceBase", "MultiTurnAgentExecutor"):
        setattr(module, name, getattr(agents, name))
    return module


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the three module names above and nothing else."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]], target: Any = None
                  ) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname in _PACKAGES:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        if fullname == AGENT_MODULE:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        if spec.name == AGENT_MODULE:
            return _agent_module()
        package = types.ModuleType(spec.name)
        package.__path__ = []  # a package with no files: `openrlhf.models` etc. are not found
        return package

    def exec_module(self, module: types.ModuleType) -> None:
        pass


@contextlib.contextmanager
def openrlhf_agent_names() -> Iterator[None]:
    """Inside: `import openrlhf.utils.agent` gives rlhfctl.agents' base classes. Outside: as before."""
    names = (*_PACKAGES, AGENT_MODULE)
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    finder = _Finder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
