"""Loading an agent_func.py: the file, its `AgentExecutor`, and which OpenRLHF vintage wrote it.

Every mistake is a ConfigError (exit 2) naming the file: missing, a syntax or import error (line shown), no
`AgentExecutor`, not a subclass of rlhfctl.agents.AgentExecutorBase. A file written for OpenRLHF imports
`openrlhf.utils.agent`: while the file loads, that import gives rlhfctl's base classes (openrlhf_names.py), so it
runs unchanged; another `openrlhf.*` import is an error naming its line.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import re
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rlhfctl.agents.base import AgentExecutorBase, MultiTurnAgentExecutor
from rlhfctl.agents.openrlhf_names import AGENT_MODULE, openrlhf_agent_names
from rlhfctl.errors import ConfigError

FLAG = "--agent-func-path"
PROVIDED = ("AgentExecutorBase", "AgentInstanceBase", "MultiTurnAgentExecutor")
V089_ARGS = ("max_steps", "max_length", "llm_engine", "hf_tokenizer", "result_queue")


@dataclass
class Agent:
    """A loaded agent file: `play` runs one episode with OpenRLHF's calling convention of its vintage."""

    path: str
    executor_cls: type
    vintage: str  # "v0.8.9": built per episode with the engine, execute(prompt, label, sampling_params)
    max_turns: Optional[int] = None
    _executor: Any = field(default=None, repr=False)

    def executor(self) -> Any:
        """v0.10's executor, built once (OpenRLHF builds one per engine) and shared by the episodes."""
        if self._executor is None:
            self._executor = self.executor_cls()
        return self._executor

    async def play(self, prompt: str, label: Any, sampling_params: Any, max_length: int, tokenizer: Any,
                   engine: Any) -> Any:
        if self.vintage == "v0.10":
            return await self.executor().execute(prompt=prompt, label=label, sampling_params=sampling_params,
                                                 max_length=max_length, hf_tokenizer=tokenizer, llm_engine=engine)
        queue: asyncio.Queue = asyncio.Queue()
        executor = self.executor_cls(max_steps=self.max_turns or 10000, max_length=max_length, llm_engine=engine,
                                     hf_tokenizer=tokenizer, result_queue=queue)
        result = await executor.execute(prompt, label, sampling_params)
        if result is None and not queue.empty():
            result = queue.get_nowait()
        return result


def load_agent(path: str, max_turns: Optional[int] = None) -> Agent:
    """The agent of `path`, checked, with its executor built once (an error in its constructor shows now)."""
    module = _import(path)
    cls = getattr(module, "AgentExecutor", None)
    if cls is None:
        found = [n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, AgentExecutorBase)
                 and v.__module__ == module.__name__]
        hint = f" (it defines {', '.join(found)}: name the one to use AgentExecutor)" if found else ""
        raise ConfigError(f"{FLAG} {path}: defines no class AgentExecutor{hint}; OpenRLHF's contract is a class "
                          "AgentExecutor subclassing AgentExecutorBase (or MultiTurnAgentExecutor) from "
                          "rlhfctl.agents")
    if not (isinstance(cls, type) and issubclass(cls, AgentExecutorBase)):
        mro = getattr(cls, "__mro__", ())[1:-1]
        bases = ", ".join(f"{b.__module__}.{b.__name__}" for b in mro) or "object"
        fix = ("; it subclasses OpenRLHF's own classes: import them from rlhfctl.agents instead of "
               "openrlhf.utils.agent" if any(b.__module__.startswith("openrlhf") for b in mro) else "")
        raise ConfigError(f"{FLAG} {path}: AgentExecutor must subclass rlhfctl.agents.AgentExecutorBase or "
                          f"MultiTurnAgentExecutor (its bases: {bases}){fix}")
    vintage = _vintage(cls)
    agent = Agent(path, cls, vintage, max_turns)
    try:
        if vintage == "v0.10":
            agent.executor()
        else:
            params = inspect.signature(cls.__init__).parameters
            cls(**{name: None for name in V089_ARGS if name in params})
    except Exception as exc:
        raise ConfigError(f"{FLAG} {path}: AgentExecutor() failed: {type(exc).__name__}: {exc}"
                          f"{_user_lines(exc, path)}") from None
    return agent


def _vintage(cls: type) -> str:
    """v0.8.9: built with the engine (its own __init__ takes llm_engine, result_queue, ...) or an
    execute(prompt, label, sampling_params) without the engine; v0.10: built bare, execute gets the engine."""
    own_init = cls.__init__ not in (AgentExecutorBase.__init__, MultiTurnAgentExecutor.__init__)
    if own_init and any(name in inspect.signature(cls.__init__).parameters for name in V089_ARGS):
        return "v0.8.9"
    execute = inspect.signature(cls.execute).parameters
    takes_engine = "llm_engine" in execute or any(p.kind == p.VAR_KEYWORD for p in execute.values())
    return "v0.10" if takes_engine else "v0.8.9"


def _import(path: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{FLAG} {path}: no such file")
    if p.suffix != ".py":
        raise ConfigError(f"{FLAG} {path}: must be a Python file (.py), as in OpenRLHF")
    name = f"rlhfctl_agent_{abs(hash(str(p.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, p)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up by module
    try:
        with openrlhf_agent_names():
            spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise ConfigError(f"{FLAG} {path}: syntax error on line {exc.lineno}: {exc.msg}\n  {(exc.text or '').strip()}"
                          ) from None
    except ModuleNotFoundError as exc:
        sys.modules.pop(name, None)
        if (exc.name or "").split(".")[0] == "openrlhf":
            raise ConfigError(openrlhf_import_message(path, exc)) from None
        raise ConfigError(f"{FLAG} {path}: {exc} (install it in this environment){_user_lines(exc, path)}") from None
    except ImportError as exc:
        sys.modules.pop(name, None)
        if exc.name == AGENT_MODULE:
            raise ConfigError(openrlhf_import_message(path, exc)) from None
        raise ConfigError(f"{FLAG} {path}: importing it raised ImportError: {exc}{_user_lines(exc, path)}") from None
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ConfigError(f"{FLAG} {path}: importing it raised {type(exc).__name__}: {exc}"
                          f"{_user_lines(exc, path)}") from None
    return module


def openrlhf_import_message(path: str, exc: BaseException) -> str:
    """Which line imports from OpenRLHF what rlhfctl does not provide, and what rlhfctl does provide."""
    lineno, line = _failing_line(exc, path)
    where = f"line {lineno}: {line}" if line else "an import of openrlhf"
    if isinstance(exc, ImportError) and exc.name == AGENT_MODULE:
        names = re.findall(r"\w+", line.split(" import ", 1)[1]) if " import " in line else []
        missing = ", ".join(n for n in names if n not in PROVIDED) or "that name"
        return (f"{FLAG} {path}: {where}\n  {AGENT_MODULE} gives rlhfctl's {', '.join(PROVIDED)} here; "
                f"{missing}: not provided by rlhfctl (write your own)")
    return (f"{FLAG} {path}: {where}\n  rlhfctl does not ship OpenRLHF: of it, only `from {AGENT_MODULE} import "
            f"{', '.join(PROVIDED)}` works in an agent file (rlhfctl's own classes); remove this import")


def _failing_line(exc: BaseException, path: str) -> tuple[Optional[int], str]:
    target = str(Path(path).resolve())
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename and str(Path(frame.filename).resolve()) == target:
            return frame.lineno, (frame.line or "").strip()
    return None, ""


def _user_lines(exc: BaseException, path: str) -> str:
    lineno, line = _failing_line(exc, path)
    return f"\n  at {path}:{lineno}: {line}" if lineno else ""


def user_traceback(exc: BaseException, path: str) -> str:
    """The frames of the traceback that are in the user's file (what to look at), most recent last."""
    target = str(Path(path).resolve())
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f.filename and str(Path(f.filename).resolve()) == target]
    return "".join(f"  {path}:{f.lineno} in {f.name}: {(f.line or '').strip()}\n" for f in frames)
