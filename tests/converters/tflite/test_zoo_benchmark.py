"""benchmarks/converter_tflite --zoo without onnx2tf's venv (as on CI): its columns are skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import benchmarks._tflite_zoo as zoo_bench
from benchmarks import converter_tflite


def test_zoo_run_without_onnx2tf_venv_skips_its_columns(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_bench(names: list[str], venv: Path | None, **_: Any) -> list[dict[str, Any]]:
        seen["venv"] = venv
        return [{"model": "ocr-cls", "input_unchanged": True,
                 "edgeops": {"convert_s": 1.0, "peak_rss_mib": 100.0, "ops": 10,
                             "transposes": 0, "max_rel_err": 1e-7},
                 "onnx2tf": {"error": "skipped: no onnx2tf venv"},
                 "litert_ms": {"edgeops": 0.5}}]

    monkeypatch.setattr(zoo_bench, "bench_zoo", fake_bench)
    monkeypatch.setattr(converter_tflite, "RESULTS", tmp_path)
    assert converter_tflite.main(["--zoo", "ocr-cls", "--onnx2tf-venv",
                                  str(tmp_path / "absent")]) == 0
    assert seen["venv"] is None
    md = (tmp_path / "converter_tflite.zoo.md").read_text()
    assert "| ocr-cls | edgeops | 1.0 | 100 | 10 / 0 | 0.50 |" in md
    assert "| onnx2tf | fails: skipped: no onnx2tf venv |" in md
    assert "onnx2tf absent" in md


def test_onnx2tf_copy_fixes_shapes_and_scope_names_and_leaves_the_source(tmp_path: Path) -> None:
    import onnx
    from onnx import helper as h

    g = h.make_graph([h.make_node("Relu", ["x"], ["y"], name="Relu@0")], "t",
                     [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 4])],
                     [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 4])])
    src, dst = tmp_path / "m.onnx", tmp_path / "copy.onnx"
    onnx.save(h.make_model(g), str(src))
    before = src.read_bytes()
    changes = zoo_bench._onnx2tf_copy(src, {"x": (1, 4)}, dst)
    m = onnx.load(str(dst))
    assert m.graph.node[0].name == "Relu_0" and changes == ["1 node names made scope-safe"]
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [1, 4]
    assert src.read_bytes() == before
