"""The gate reads the task metric; the post-processing tail stays float; --task and --metric.

A small detector built here has the YOLOv8 head's shape: box values in pixels concatenated
with sigmoid class probabilities, ``(1, 4 + C, anchors)``. Quantising that Concat shares one
range between both (the failure seen on a real YOLOv8): the gate must refuse it, and the
default build must keep the tail float and pass on detection F1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from converters.onnx_tail import postprocessing_tail
from converters.tasks import infer_task
from edgeops.bundle import read_bundle
from tests.converters.conftest import cheapest_bit_split
from tests.converters.test_bad_input import _assert_refused

ANCHORS = 256


def _grid() -> onnx.TensorProto:
    """Anchor boxes in pixels: centres on a 20-pixel grid, 16 x 16 (cx, cy, w, h)."""
    i = np.arange(ANCHORS)
    g = np.stack([20.0 * (i % 16), 20.0 * (i // 16), np.full(ANCHORS, 16.0),
                  np.full(ANCHORS, 16.0)])[None].astype(np.float32)
    return nh.from_array(g, "grid")


def _detector() -> onnx.ModelProto:
    """conv backbone -> box conv (anchor grid + 2 |.| pixels) and class conv -> Sigmoid ->
    Concat: coordinates up to 320 beside probabilities in [0, 1]."""
    rng = np.random.default_rng(7)
    w = lambda shape, name, s=0.4: nh.from_array(  # noqa: E731
        (rng.standard_normal(shape) * s).astype(np.float32), name)
    inits = [w((8, 3, 3, 3), "w1"), w((4, 8, 1, 1), "wb"), w((3, 8, 1, 1), "wc", 2.0),
             nh.from_array(np.array([1, 4, ANCHORS], np.int64), "shape_b"),
             nh.from_array(np.array([1, 3, ANCHORS], np.int64), "shape_c"),
             nh.from_array(np.array(2.0, np.float32), "pixels"), _grid()]
    nodes = [h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             h.make_node("Conv", ["r1", "wb"], ["box_raw"], name="box_conv"),
             h.make_node("Conv", ["r1", "wc"], ["cls_raw"], name="cls_conv"),
             h.make_node("Reshape", ["box_raw", "shape_b"], ["box_flat"], name="box_reshape"),
             h.make_node("Abs", ["box_flat"], ["box_abs"], name="box_abs"),
             h.make_node("Mul", ["box_abs", "pixels"], ["box_px"], name="box_scale"),
             h.make_node("Add", ["box_px", "grid"], ["box"], name="box_offset"),
             h.make_node("Reshape", ["cls_raw", "shape_c"], ["cls_flat"], name="cls_reshape"),
             h.make_node("Sigmoid", ["cls_flat"], ["cls"], name="cls_sigmoid"),
             h.make_node("Concat", ["box", "cls"], ["out"], axis=1, name="head_concat")]
    g = h.make_graph(nodes, "det", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 16, 16])],
                     [h.make_tensor_value_info("out", T.FLOAT, [1, 7, ANCHORS])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 13)], ir_version=8)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save_model(model, str(path))
    return path


def _data(path: Path, n: int = 16) -> Path:
    x = np.random.default_rng(1).uniform(0, 1, (n, 3, 16, 16)).astype(np.float32)
    np.savez(path, x=x)
    return path


def test_postprocessing_tail_is_found_from_graph_structure() -> None:
    tail = postprocessing_tail(_detector())
    assert set(tail) == {"box_reshape", "box_abs", "box_scale", "box_offset", "cls_reshape",
                         "cls_sigmoid", "head_concat"}
    assert not {"conv1", "relu1", "box_conv", "cls_conv"} & set(tail)
    assert tail["head_concat"].startswith("post-processing: Concat after the last compute op")


def test_auto_task_reads_the_detector_head() -> None:
    ref = {"out": np.zeros((2, 7, ANCHORS), np.float32)}
    spec = infer_task(_detector(), ref, {"x": (1, 3, 16, 16)})
    assert spec.task == "detection" and spec.inferred and spec.outputs == ("out",)
    assert spec.layout is not None and spec.layout.anchors_last and not spec.layout.objectness
    assert "dense detection head" in spec.why


def test_quantised_head_is_refused_by_the_gate_and_the_default_builds_it(
        cli, keys_home: Path, tmp_path: Path) -> None:
    model = _save(_detector(), tmp_path / "det.onnx")
    cal = _data(tmp_path / "cal.npz")
    common = ("build", model, "--name", "det", "--version", "1.0.0", "--target", "x86-cpu",
              "--calibration", cal, "--no-perf-aware")
    # The head quantised is what the gate refuses, whatever the ranges and the bit split:
    # MinMax (--effort fast) and the first split stop it without the engine's choices, which
    # the default build below makes.
    with cheapest_bit_split():
        forced = cli(*common, "--quantise-tail", "--effort", "fast", "--out", tmp_path / "forced")
    _assert_refused(forced, tmp_path / "forced", 1, "target x86-cpu: detection_f1 dropped",
                    "(task detection, inferred)")

    ok = cli(*common, "--out", tmp_path / "ok", "--json")
    assert ok.code == 0, ok.err
    art = read_bundle(Path(json.loads(ok.out)["bundle"])).manifest.artifact_for("x86-cpu")
    assert art is not None and art.precision == "int8"
    acc = art.metrics["accuracy"]
    assert acc["gate_metric"] == "detection_f1" and acc["drop"] <= 0.01
    task = acc["task"]
    assert task["task"] == "detection" and task["inferred"] is True
    assert task["details"]["detections_reference"] > 20       # the gate saw real detections
    assert task["details"]["class_score_cosine"] > 0.99
    assert task["channels"]["worst_channel"]["output"] == "out"
    assert set(art.details["postprocessing_tail"]["float"]) >= {"head_concat", "cls_sigmoid"}
    assert art.details["quantised_nodes"] >= 2                 # the convolutions are INT8
    report = json.loads(Path(json.loads(ok.out)["report_json"]).read_text())
    assert report["targets"]["x86-cpu"]["metrics"]["accuracy"]["task"]["metric"] == "detection_f1"
    md = Path(json.loads(ok.out)["report_md"]).read_text()
    assert "x86-cpu: task **detection** (auto: 'out' (7, 256) is a dense detection head" in md
    assert "gate metric detection_f1 " in md and "worst channel: `out` channel " in md


def _gemm_regressor() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    inits = [nh.from_array(rng.standard_normal((16, 12)).astype(np.float32), "w1"),
             nh.from_array(rng.standard_normal((4, 16)).astype(np.float32), "w2")]
    nodes = [h.make_node("Gemm", ["x", "w1"], ["h1"], transB=1, name="fc1"),
             h.make_node("Relu", ["h1"], ["r1"], name="relu"),
             h.make_node("Gemm", ["r1", "w2"], ["y"], transB=1, name="fc2")]
    g = h.make_graph(nodes, "reg", [h.make_tensor_value_info("x", T.FLOAT, ["N", 12])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 4])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 13)], ir_version=8)


def test_graph_output_made_by_a_compute_op_is_not_rounded(cli, keys_home: Path,
                                                            tmp_path: Path) -> None:
    model = _save(_gemm_regressor(), tmp_path / "reg.onnx")
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(0).standard_normal(
        (32, 12)).astype(np.float32))
    res = cli("build", model, "--name", "reg", "--version", "1.0.0", "--target", "x86-cpu",
              "--calibration", tmp_path / "cal.npz", "--no-perf-aware", "--out", tmp_path / "o",
              "--json")
    assert res.code == 0, res.err
    b = read_bundle(Path(json.loads(res.out)["bundle"]))
    art = b.manifest.artifact_for("x86-cpu")
    assert art is not None and art.precision == "int8"
    assert art.details["postprocessing_tail"]["outputs_unquantised"] == ["y"]
    m = onnx.load_from_string(b.read_file(art.file.path))
    made = {o: n.op_type for n in m.graph.node for o in n.output}
    assert made["y"] != "DequantizeLinear"
    assert "DequantizeLinear" in made.values()                 # the Gemms are still INT8
    assert art.metrics["accuracy"]["gate_metric"] == "channel_cosine_min"
    assert art.metrics["accuracy"]["task"]["task"] == "regression"


def test_user_metric_gates_the_build(cli, keys_home: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mymetrics.py").write_text(
        "import numpy as np\n"
        "def close(ref, got):\n"
        "    return float(np.abs(ref['y'] - got['y']).max() < 10.0)\n"
        "def exact(ref, got):\n"
        "    return float(np.array_equal(ref['y'], got['y']))\n"
        "def nan_unless_exact(ref, got):\n"
        "    return 1.0 if np.array_equal(ref['y'], got['y']) else float('nan')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = _save(_gemm_regressor(), tmp_path / "reg.onnx")
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(0).standard_normal(
        (16, 12)).astype(np.float32))
    common = ("build", model, "--name", "reg", "--version", "1.0.0", "--target", "x86-cpu",
              "--calibration", tmp_path / "cal.npz", "--no-perf-aware")
    ok = cli(*common, "--metric", "mymetrics:close", "--out", tmp_path / "a", "--json")
    assert ok.code == 0, ok.err
    acc = json.loads(ok.out)["targets"]["x86-cpu"]["metrics"]["accuracy"]
    assert acc["gate_metric"] == "mymetrics:close" and acc["drop"] == 0.0
    bad = cli(*common, "--metric", "mymetrics:exact", "--out", tmp_path / "b")
    _assert_refused(bad, tmp_path / "b", 1, "mymetrics:exact dropped 100.00%")
    missing = cli(*common, "--metric", "mymetrics:nope", "--out", tmp_path / "c")
    _assert_refused(missing, tmp_path / "c", 2, "'mymetrics' has no function 'nope'")
    nan = cli(*common, "--metric", "mymetrics:nan_unless_exact", "--out", tmp_path / "d")
    _assert_refused(nan, tmp_path / "d", 1, "target x86-cpu: mymetrics:nan_unless_exact cannot "
                    "be computed "
                    "(task regression, inferred): the artifact's score", "hint: a --metric "
                    "function must return a finite number")
    assert "dropped" not in nan.err


def test_task_that_fits_no_output_is_a_usage_error(cli, keys_home: Path,
                                                   tmp_path: Path) -> None:
    model = _save(_gemm_regressor(), tmp_path / "reg.onnx")
    res = cli("build", model, "--name", "reg", "--version", "1.0.0", "--target", "x86-cpu",
              "--precision", "fp32", "--task", "ctc", "--out", tmp_path / "o")
    _assert_refused(res, tmp_path / "o", 2, "--task ctc: no output has the form this task reads",
                    "'y' (4,)")


def test_python_api_takes_a_metric_function_and_a_task(tmp_path: Path) -> None:
    from converters.api import BuildRequest
    from converters.build import build

    model = _save(_gemm_regressor(), tmp_path / "reg.onnx")
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(0).standard_normal(
        (16, 12)).astype(np.float32))
    seen: list[tuple[int, ...]] = []

    def worst_abs(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> float:
        seen.append(ref["y"].shape)
        return 1.0 - float(np.abs(ref["y"] - got["y"]).max() > 5.0)

    req = BuildRequest(model=model, name="reg", version="1.0.0", targets=("x86-cpu",),
                       calibration=tmp_path / "cal.npz",
                       options={"metric": worst_abs, "perf_aware": False})
    (art,) = build(req, lambda _m: None, tmp_path / "w").artifacts
    acc = art.metrics["accuracy"]
    assert acc["gate_metric"] == "worst_abs" and acc["task"]["reference"] == 1.0
    assert seen and seen[0] == (4,)                 # one sample's outputs, batch axis removed
    spec = BuildRequest(model=model, name="reg", version="1.0.0", targets=("x86-cpu",),
                        precision="fp32", calibration=tmp_path / "cal.npz",
                        options={"task": "embedding"})
    (fp32,) = build(spec, lambda _m: None, tmp_path / "w2").artifacts
    assert fp32.metrics["accuracy"]["task"]["task"] == "embedding"
    assert fp32.metrics["accuracy"]["task"]["inferred"] is False
