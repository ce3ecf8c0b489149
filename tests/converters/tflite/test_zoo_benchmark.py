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


def test_zoo_subset_run_updates_its_rows_and_keeps_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    def row(model: str, ms: float) -> dict[str, Any]:
        return {"model": model, "input_unchanged": True,
                "edgeops": {"convert_s": 1.0, "peak_rss_mib": 100.0, "ops": 10,
                            "transposes": 0, "max_rel_err": 1e-7},
                "onnx2tf": {"error": "skipped: no onnx2tf venv"}, "litert_ms": {"edgeops": ms}}

    rounds_seen: list[int] = []

    def fake_bench(names: list[str], venv: Path | None, rounds: int = 7,
                   **_: Any) -> list[dict[str, Any]]:
        rounds_seen.append(rounds)
        return [row(n, 2.0) for n in names]

    monkeypatch.setattr(zoo_bench, "bench_zoo", fake_bench)
    monkeypatch.setattr(converter_tflite, "RESULTS", tmp_path)
    (tmp_path / "converter_tflite.zoo.json").write_text(json.dumps(
        {"results": [row("magika", 9.0), row("ocr-cls", 9.0)]}))
    assert converter_tflite.main(["--zoo", "ocr-cls", "--zoo-rounds", "15", "--onnx2tf-venv",
                                  str(tmp_path / "absent")]) == 0
    doc = json.loads((tmp_path / "converter_tflite.zoo.json").read_text())
    ms = {r["model"]: r["litert_ms"]["edgeops"] for r in doc["results"]}
    assert ms == {"ocr-cls": 2.0, "magika": 9.0} and rounds_seen == [15]
    assert [r["model"] for r in doc["results"]] == ["ocr-cls", "magika"]   # zoo order
    assert "Rows of ocr-cls from this run (15 rounds)" in (
        tmp_path / "converter_tflite.zoo.md").read_text()


def test_channels_last_grey_input_gets_a_scan_in_unit_range() -> None:
    """nucleus-seg-256's (N, 256, 256, 1) input: a scan resized to 256x256, in [0, 1]."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    g = h.make_graph([h.make_node("Identity", ["input:0"], ["y"])], "t",
                     [h.make_tensor_value_info("input:0", T.FLOAT, [1, 256, 256, 1])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 256, 256, 1])])
    m: onnx.ModelProto = h.make_model(g)
    x = zoo_bench._feeds(m, zoo_bench.ZOO_SHAPES["nucleus-seg-256"], 0)["input:0"]
    assert x.shape == (1, 256, 256, 1) and x.dtype.name == "float32"
    assert 0.0 <= float(x.min()) < float(x.max()) <= 1.0


def test_zoo_int8_run_of_one_model_keeps_the_others_marked(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import benchmarks._tflite_zoo_int8 as int8_bench

    def row(model: str, value: float) -> dict[str, Any]:
        built = {"build_s": 1.0, "metric": "mask_iou", "value": value, "drop": 1 - value,
                 "gate_1pct": False, "used": ["bias_correction"],
                 "choices": {"mse_ranges": {"minmax": 0.2, "mse_ranges": 1 - value}}}
        return {"model": model, "target": "edgetpu", "input": [1, 3, 320, 320],
                "samples": {"calibration": 8, "validation": 8}, "before": built, "after": built}

    monkeypatch.setattr(int8_bench, "bench_fullint", lambda names, samples: [row("ocr-cls", 0.9)])
    monkeypatch.setattr(converter_tflite, "RESULTS", tmp_path)
    (tmp_path / "converter_tflite.zoo_int8.json").write_text(json.dumps(
        {"machine": {"load_before": 1.0}, "results": [row("ocr-det", 0.8), row("ocr-cls", 0.5)]}))
    assert converter_tflite.main(["--zoo-int8", "ocr-cls"]) == 0
    rows = json.loads((tmp_path / "converter_tflite.zoo_int8.json").read_text())["results"]
    assert [(r["model"], r["after"]["value"], "earlier_run" in r) for r in rows] == [
        ("ocr-cls", 0.9, False), ("ocr-det", 0.8, True)]
    md = (tmp_path / "converter_tflite.zoo_int8.md").read_text()
    assert "| ocr-det (320x320) [earlier run] | edgetpu |" in md and "mask_iou 0.9000" in md
