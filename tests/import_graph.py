"""The product packages' import graph, read from the source with ``ast``: every ``import``
statement wherever it sits (inside functions too, relative ones resolved), so a cycle that only
closes at call time is still seen. Used by the per-package import-graph tests.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

__all__ = ["PRODUCT_PACKAGES", "cycles", "import_graph"]

PRODUCT_PACKAGES = ("edgeops", "converters", "device_agent", "fleet", "hardware_tests",
                    "edgeops_sim")

_ROOT = Path(__file__).resolve().parents[1]


def _modules(package: str) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is a package)}`` for every module under ``package``."""
    out = {}
    for path in sorted((_ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(_ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its body (parents included: importing
    ``a.b.c`` runs ``a.b``; a module's own parent packages are left out, they run first anyway)."""
    mods = _modules(package)

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, (path, is_pkg) in mods.items():
        base = mod if is_pkg else mod.rpartition(".")[0]
        names: list[str] = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                anchor = base
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                module = (f"{anchor}.{node.module}" if node.module else anchor) if node.level \
                    else node.module or ""
                names.extend(f"{module}.{a.name}" for a in node.names)
        deps: set[str] = set()
        for name in names:
            found = resolve(name)
            while found:
                deps.add(found)
                found = resolve(found.rpartition(".")[0]) if "." in found else None
        graph[mod] = {d for d in deps if d != mod and not mod.startswith(d + ".")}
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found
