"""The package's import graph has no circles.

Every ``import`` and ``from ... import`` of a ``stems_opt`` module counts,
also those inside functions (a lazy import hides a circle from the
interpreter, not from the reader); only imports under ``if TYPE_CHECKING:``
are left out, since they never run. The implicit import of a parent package
(``stems_opt/__init__.py`` runs before any submodule) is not an edge: the
top-level package re-exports the public API and so imports everything.

Mutation: adding ``from stems_opt.cost.evaluation import evaluate`` inside
a function of ``stems_opt/mapping.py`` (the circle ``cost_model.py`` and
``mapping.py`` once formed) makes :func:`test_no_import_cycles` fail with
the cycle ``stems_opt.cost.evaluation -> stems_opt.cost.energy ->
stems_opt.cost.geometry -> stems_opt.mapping -> stems_opt.cost.evaluation``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "stems_opt"


def _module_names(root: Path) -> dict[str, Path]:
    mods = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports (see the module docstring)."""
    mods = _module_names(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import sub` imports the submodule `pkg.sub` when there is one.
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or ``None``."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack = [(start, iter(sorted(graph[start])))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
            elif nxt in on_path:
                return [*path[path.index(nxt):], nxt]
            elif nxt not in done:
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
                on_path.add(nxt)
    return None


def test_find_cycle_finds_a_planted_cycle() -> None:
    # a -> b -> c -> a is a cycle; d hangs off it; e -> f is acyclic.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    graph["c"] = {"d"}
    assert find_cycle(graph) is None


def test_graph_sees_lazy_imports_and_skips_type_checking(tmp_path: Path) -> None:
    pkg = tmp_path / "stems_opt"
    (pkg / "cost").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cost" / "__init__.py").write_text("")
    (pkg / "mapping.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from stems_opt.problem import Problem\n"
        "def check():\n    from stems_opt.cost import geometry\n")
    (pkg / "problem.py").write_text("import stems_opt.mapping\n")
    (pkg / "cost" / "geometry.py").write_text("from stems_opt.mapping import check\n")
    graph = import_graph(pkg)
    assert graph["stems_opt.mapping"] == {"stems_opt.cost", "stems_opt.cost.geometry"}
    assert graph["stems_opt.problem"] == {"stems_opt.mapping"}
    assert find_cycle(graph) == ["stems_opt.cost.geometry", "stems_opt.mapping",
                                 "stems_opt.cost.geometry"]


def test_no_import_cycles() -> None:
    graph = import_graph(PACKAGE)
    assert "stems_opt.cost.evaluation" in graph and "stems_opt.mapping" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_mapping_and_limits_import_no_cost_model() -> None:
    # The two modules the cost model's circles went through: mapping (check) and
    # limits (the worst-case energy bound) now sit below the cost package.
    graph = import_graph(PACKAGE)
    for low in ("stems_opt.mapping", "stems_opt.limits"):
        assert not any(m.startswith("stems_opt.cost") for m in graph[low]), low
