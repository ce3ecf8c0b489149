"""The agent's modules import each other in one direction: no import cycle, no re-export shim.

Why a test: the two cycles this replaces (``tuf_client`` <-> ``tuf_update`` and ``inference``
<-> ``local_api``) ran through imports inside functions and module ``__getattr__`` hooks, which
no import-time check sees. The graph here is read from the source (every ``import`` anywhere in
a module, lazy ones included), so a cycle fails even if it never triggers at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.import_graph import cycles, import_graph

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "device_agent"


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_device_agent() -> None:
    graph = import_graph(PACKAGE)
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
