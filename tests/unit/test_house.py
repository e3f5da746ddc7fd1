"""The shape of the code, checked: typed configs, no worker method named by a string, no import cycles.

These read the package's source (no imports of it), so a regression is caught where it is written.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest
from tests.helpers import ROOT

PACKAGE = ROOT / "rlhfctl"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _offences(pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return [f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
            for path in SOURCES for number, line in enumerate(path.read_text().splitlines(), 1)
            if regex.search(line)]


def test_no_config_is_typed_any() -> None:
    assert _offences(r"\bcfg\s*:\s*\"?Any\b") == []


def test_no_config_is_read_with_a_default() -> None:
    """getattr(cfg, "x", default) hides a misspelt or missing option; a function takes the group that has it."""
    assert _offences(r"getattr\(\s*(self\.)?(cfg|config|args|settings)\s*,[^,()]+,") == []


def test_the_probe_finds_what_it_forbids(tmp_path: Path) -> None:
    """The patterns above match the code they are meant to ban (else the two tests above could never fail)."""
    assert re.search(r"\bcfg\s*:\s*\"?Any\b", "def f(cfg: Any) -> None:")
    assert re.search(r"getattr\(\s*(self\.)?(cfg|config|args|settings)\s*,[^,()]+,",
                     'x = getattr(cfg, "revision", None)')


def _runtime_imports(path: Path) -> set[str]:
    """The rlhfctl modules `path` imports when it runs: imports under `if TYPE_CHECKING:` are for annotations only
    and never execute, so they are left out."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    found = set()
    this = _module(path)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("rlhfctl")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from this module's package
                package = this.split(".")[: len(this.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join(package + ([base] if base else []))
            if base.startswith("rlhfctl"):
                found.add(base)
                found |= {f"{base}.{alias.name}" for alias in node.names}
    modules = {_module(p) for p in SOURCES}
    return {name for name in found if name in modules and name != this}


def _graph() -> dict[str, set[str]]:
    return {_module(path): _runtime_imports(path) for path in SOURCES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, as the path that closes it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _package_of(module: str) -> str:
    """rlhfctl.ppo.trainer -> rlhfctl.ppo; a top-level module (rlhfctl.hub) is its own unit."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_import_cycle_between_modules() -> None:
    graph = _graph()
    # A package's __init__ re-exporting its modules is how `from rlhfctl.config import X` works: not a cycle of design.
    for name in graph:
        if (PACKAGE.parent / Path(*name.split(".")) / "__init__.py").exists():
            graph[name] = set()
    assert _cycle(graph) is None


def test_no_import_cycle_between_packages() -> None:
    packages: dict[str, set[str]] = defaultdict(set)
    for module, imports in _graph().items():
        packages[_package_of(module)] |= {_package_of(m) for m in imports} - {_package_of(module)}
    packages.pop("rlhfctl", None)  # rlhfctl/__init__.py: the version only
    assert _cycle(dict(packages)) is None, "packages import each other (runtime imports)"


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("path", sorted((PACKAGE / "config").glob("*.py")), ids=lambda p: p.name)
def test_config_modules_stay_small(path: Path) -> None:
    """One job per module: the schema package grew to 1,200 lines in one file once."""
    assert len(path.read_text().splitlines()) <= 400


def _readme_layout() -> dict[str, str]:
    """The README's layout block under rlhfctl/: each package (`name/`) or top-level module line -> its text,
    continuation lines included."""
    readme = (PACKAGE.parent / "README.md").read_text()
    block = readme.split("## Development", 1)[1].split("```", 2)[1]
    entries: dict[str, str] = {}
    current = None
    inside = False
    for line in block.splitlines():
        if not line.startswith(" "):
            inside = line.strip() == "rlhfctl/"
            continue
        if not inside:
            continue
        match = re.match(r"  (\S[^ ]*(?:, \S+)*)\s{2,}|  (\S+)$", line)
        if line.startswith("  ") and not line.startswith("   "):
            names = (match.group(1) or match.group(2)) if match else line.split()[0]
            current = names
            entries[current] = line
        elif current is not None:
            entries[current] += " " + line.strip()
    return entries


def test_the_readme_layout_matches_the_tree() -> None:
    entries = _readme_layout()
    named = {n.strip(",") for key in entries for n in key.split(", ")}
    packages = {p.name + "/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    modules = {p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    assert packages | modules <= named, f"missing from the README layout: {sorted((packages | modules) - named)}"
    assert named <= packages | modules, f"in the README layout, not in rlhfctl/: {sorted(named - packages - modules)}"
    for key, text in entries.items():
        if not key.endswith("/"):
            continue
        folder = PACKAGE / key
        for name in set(re.findall(r"\b([\w*]+\.py)\b", text)):
            assert list(folder.glob(name)), f"the README layout names {key}{name}, which does not exist"


# ------------------------------------------------------------------------------------------------ typed slices
COMMAND_CONFIGS = {"TrainPPOConfig", "CheckRewardConfig", "ServeRMConfig", "BenchRMConfig"}
# The composition roots: where a command's config is taken apart into the typed groups below it (and config/ itself,
# the schema, whose bundles are built with one `.of(cfg)`).
COMPOSITION_ROOTS = {"rlhfctl/ppo/run.py", "rlhfctl/serving/server.py", "rlhfctl/serving/sources.py",
                     "rlhfctl/bench/runner.py", "rlhfctl/checks/runner.py", "rlhfctl/agents/check.py"}
ROOT_PACKAGES = ("rlhfctl/cli/", "rlhfctl/config/")


def _whole_config_parameters(source: str, where: str) -> list[str]:
    """`where:line: name: Type` for every parameter annotated with a whole command config."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
                if arg is None or arg.annotation is None:
                    continue
                named = {n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else n.value
                         for n in ast.walk(arg.annotation) if isinstance(n, (ast.Name, ast.Attribute, ast.Constant))}
                text = " ".join(str(n) for n in named)
                if any(re.search(rf"\b{c}\b", text) for c in COMMAND_CONFIGS):
                    found.append(f"{where}:{arg.lineno}: {arg.arg}: {ast.unparse(arg.annotation)}")
    return found


def test_only_the_composition_roots_take_a_whole_command_config() -> None:
    """Below the roots a function takes the groups it uses (`fit(train: TrainArgs)`, or a bundle of slices built by
    one `.of(cfg)`), so its signature says what it depends on and a Ray worker is not pickled with every option."""
    offences = []
    for path in SOURCES:
        where = str(path.relative_to(PACKAGE.parent))
        if where in COMPOSITION_ROOTS or where.startswith(ROOT_PACKAGES):
            continue
        offences += _whole_config_parameters(path.read_text(), where)
    assert offences == []


def test_the_slice_probe_catches_a_whole_config_below_the_roots() -> None:
    """The probe finds the forms a whole config is written in (plain, quoted, Optional, a union, a keyword), and
    leaves groups alone."""
    caught = _whole_config_parameters(
        "def f(cfg: TrainPPOConfig, *, serve: 'ServeRMConfig') -> None: ...\n"
        "class W:\n    def __init__(self, cfg: Optional[config.CheckRewardConfig]) -> None: ...\n"
        "async def g(bench: BenchRMConfig | None = None) -> None: ...\n"
        "def h(train: TrainArgs, groups: PolicyGroups) -> TrainPPOConfig: ...\n", "x.py")
    assert sorted(line.split(": ", 1)[1] for line in caught) == [
        "bench: BenchRMConfig | None", "cfg: Optional[config.CheckRewardConfig]", "cfg: TrainPPOConfig",
        "serve: 'ServeRMConfig'"]
