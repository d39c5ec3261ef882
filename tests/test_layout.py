"""The package's import graph has no cycle, function-level imports included.

Imports under ``if TYPE_CHECKING:`` are left out: they never run. A submodule's import of its
parent package (which Python runs first) is left out too: only what a module names counts.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import distillkit

PACKAGE = Path(distillkit.__file__).parent


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(source: str, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` imports anywhere but under TYPE_CHECKING."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return {m for m in found if m in known and m != name}


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module → the modules it imports, for ``{module: (source, is_package)}``."""
    known = set(sources)
    return {name: imports(source, name, is_package, known) for name, (source, is_package) in sources.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def package_sources() -> dict[str, tuple[str, bool]]:
    return {
        module_name(path): (path.read_text(encoding="utf-8"), path.name == "__init__.py")
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def test_no_import_cycles() -> None:
    graph = import_graph(package_sources())
    assert len(graph) > 30  # the walk found the package's modules
    assert cycles(graph) == []


def test_the_check_finds_a_cycle_hidden_in_a_function() -> None:
    sources = {
        "pkg": ("", True),
        "pkg.a": ("from pkg.b import x\n", False),
        "pkg.b": ("def f():\n    from pkg import c\n", False),
        "pkg.c": ("import pkg.a\n", False),
        "pkg.d": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import y\n", False),
    }
    graph = import_graph(sources)
    assert graph["pkg.d"] == set()  # type-only imports never run
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_context_imports_nothing_of_ours() -> None:
    assert import_graph(package_sources())["distillkit._context"] == set()


def test_a_server_store_does_not_load_qdrant_edge() -> None:
    code = "import sys, distillkit.store.server; assert 'qdrant_edge' not in sys.modules, 'qdrant_edge loaded'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
