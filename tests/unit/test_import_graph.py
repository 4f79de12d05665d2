"""Imports point down the floors (docs/design.md): no two modules of
src/shala import each other, directly or round a longer loop, and the floors
this test names stay below the ones above them. Imports inside functions
count: a lazy import is still a dependency.

Run as a script to print the graph's cycles and every edge:
``python tests/unit/test_import_graph.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the shala modules it imports (``from . import x`` of a
    submodule is an edge to the submodule, not to the package)."""
    files = {module_name(p): p for p in (SRC / "shala").rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module
                if node.level:  # relative: up level - 1 packages from this module's own
                    base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            graph[mod].update(t for t in targets if t in files and t != mod)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = [stack.pop()]
            while component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycles_finds_two_and_longer_loops():
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c", "f"}, "f": set()}
    assert cycles(graph) == [["a", "b"], ["c", "d", "e"]]


def test_no_module_imports_one_that_imports_it_back():
    assert cycles(import_graph()) == []


def test_the_lowest_floor_imports_only_errors():
    graph = import_graph()
    for mod in ("shala.errors", "shala.distributions", "shala.registry", "shala.jsonio", "shala.provenance"):
        assert graph[mod] <= {"shala.errors"}, (mod, graph[mod])


def test_stages_do_not_import_upward():
    """Training does not import evaluation (the shared maths is in
    shala.distributions, the library versions in shala.provenance) or
    launch (the caller passes its fit to the GPUs down); models do not
    import the data stage (checksums are in shala.jsonio); the data stage
    imports no planner or config helper."""
    graph = import_graph()
    upward = {"shala.train.": ("shala.evaluation", "shala.launch"), "shala.model.": ("shala.data",),
              "shala.data.": ("shala.plan", "shala.config")}
    for mod, deps in graph.items():
        for floor, above in upward.items():
            if mod.startswith(floor):
                assert not [d for d in deps if d.startswith(above)], (mod, deps)


if __name__ == "__main__":
    g = import_graph()
    print("cycles:", cycles(g) or "none")
    for m in sorted(g):
        print(m, "->", ", ".join(sorted(g[m])) or "-")
