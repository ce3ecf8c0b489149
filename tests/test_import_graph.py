"""Each product package's import graph runs one way: no module imports, even inside a function, a module
that (through any chain) imports it back.

Cycles hide behind function-level imports (``accept`` once lived in the dispatcher, so every pass
imported the dispatcher back at call time); this reads every ``import`` statement with ``ast``,
wherever it sits, and looks for strongly connected modules.
"""

from __future__ import annotations

import pytest

from tests.import_graph import PRODUCT_PACKAGES, cycles, import_graph


def test_finder_sees_function_level_and_relative_imports() -> None:
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert cycles(graph) == [["p.a", "p.b", "p.c"]]
    assert cycles({"p.a": {"p.b"}, "p.b": set()}) == []


def test_graph_reads_imports_inside_functions() -> None:
    graph = import_graph("converters")
    # onnx_backend imports onnx_quant only inside onnx_backend(): the graph must still see it.
    assert "converters.onnx_quant" in graph["converters.onnx_backend"]
    assert "converters.onnx_accept" in graph["converters.onnx_quant"]


@pytest.mark.parametrize("package", PRODUCT_PACKAGES)
def test_no_import_cycle(package: str) -> None:
    graph = import_graph(package)
    found = cycles(graph)
    detail = "; ".join(" <-> ".join(c) + " (" + ", ".join(
        f"{m} -> {sorted(d for d in graph[m] if d in c)}" for m in c) + ")" for c in found)
    assert not found, f"import cycles in {package}: {detail}"
