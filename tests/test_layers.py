"""The import graph keeps its three layers: the core (harness/ without its commands) imports no plugin and no
command, plugins (compressors/, suites/) import no command, and no module takes part in an import cycle.

Read from the source with `ast`, so a lazy import inside a function counts as much as one at the top of a file."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "compressors", "suites")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The project's modules `path` imports (the longest known prefix of each imported name)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, set(modules)) for name, path in modules.items()}


def _layer(module: str) -> str:
    if module.split(".")[0] in ("compressors", "suites"):
        return "plugin"
    if module == "harness.cli" or module.startswith("harness.commands") or module == "harness.__main__":
        return "command"
    return "core"


def test_the_graph_is_read(graph: dict[str, set[str]]) -> None:
    # the reader must see real edges, or the layer tests below would pass on an empty graph
    assert "harness.generation" in graph["compressors.base"] | graph["suites.base"]
    assert "harness.commands.run" in graph["harness.cli"]


@pytest.mark.parametrize("lower, forbidden", [("core", {"plugin", "command"}), ("plugin", {"command"})])
def test_layers_import_downwards_only(graph: dict[str, set[str]], lower: str, forbidden: set[str]) -> None:
    upward = sorted(f"{module} -> {target}" for module, targets in graph.items() if _layer(module) == lower
                    for target in targets if _layer(target) in forbidden)
    assert upward == []


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    # a package's __init__ importing its own submodules is how a package gathers them, not a cycle between
    # concepts (a submodule's import of its package is implied by Python anyway); every other back edge is
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []
