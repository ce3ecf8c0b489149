"""The agent's modules import each other in one direction: no import cycle, no re-export shim.

Why a test: the two cycles this replaces (``tuf_client`` <-> ``tuf_update`` and ``inference``
<-> ``local_api``) ran through imports inside functions and module ``__getattr__`` hooks, which
no import-time check sees. The graph here is read from the source (every ``import`` anywhere in
a module, lazy ones included), so a cycle fails even if it never triggers at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "device_agent"


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found.update(n for n in names if n in known)
    return found


def import_graph(package: str = PACKAGE) -> dict[str, set[str]]:
    files = sorted((REPO / package).rglob("*.py"))
    known = {_module_name(f) for f in files}
    return {_module_name(f): _imports(f, known) - {_module_name(f)} for f in files}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), sorted."""
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
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_device_agent() -> None:
    graph = import_graph()
    assert "device_agent.daemon" in graph          # the graph is read from the real tree
    assert cycles(graph) == []


def test_no_module_of_the_agent_only_re_exports() -> None:
    """A module whose public names all live elsewhere is a shim: import from the owner."""
    shims = []
    for path in sorted((REPO / PACKAGE).rglob("*.py")):
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body):
            shims.append(f"{path.name}: module __getattr__")
        defined = {n.name for n in tree.body
                   if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
        defined |= {t.id for n in tree.body if isinstance(n, ast.Assign)
                    for t in n.targets if isinstance(t, ast.Name) and t.id != "__all__"}
        exported = next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                         and any(isinstance(t, ast.Name) and t.id == "__all__"
                                 for t in n.targets)), [])
        if path.name != "__init__.py" and exported and not set(exported) & defined:
            shims.append(f"{path.name}: re-exports {exported}")
    assert shims == []
