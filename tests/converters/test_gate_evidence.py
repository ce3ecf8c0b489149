"""The gate refuses when FP32 gives the task metric nothing to judge (converters/tasks/score.py
``Evidence``): no detections, empty masks, no characters, a decision that never changes.

Each scenario is one tiny graph and two data sets: one on which the FP32 model finds nothing
(the build is refused with one line, exit 1, nothing written) and one on which it finds
something (the build passes as before and the report records how much it found).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from tests.converters.test_bad_input import _assert_refused
from tests.converters.test_data_forms import _stateful

ANCHORS = 64


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
           outputs: list[onnx.ValueInfoProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    g = h.make_graph(nodes, "g", inputs, outputs, inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 13)], ir_version=8)


def _f(a: np.ndarray | list[float] | float, name: str) -> onnx.TensorProto:
    return nh.from_array(np.asarray(a, np.float32), name)


def _detector() -> onnx.ModelProto:
    """A YOLOv8-shaped dense head ``(1, 4 + 2, 64)``: anchor-grid boxes beside sigmoid class
    scores whose logits are ``4 * x - 6``: an all-zero image scores 0.0025 everywhere."""
    i = np.arange(ANCHORS)
    grid = np.stack([20.0 * (i % 8), 20.0 * (i // 8), np.full(ANCHORS, 16.0),
                     np.full(ANCHORS, 16.0)])[None]
    inits = [_f(grid, "grid"), _f(np.full((2, 1, 1, 1), 4.0), "wc"), _f([-6.0, -6.0], "bc"),
             nh.from_array(np.array([1, 2, ANCHORS], np.int64), "shape_c")]
    nodes = [h.make_node("Conv", ["x", "wc", "bc"], ["c"]),
             h.make_node("Reshape", ["c", "shape_c"], ["cf"]),
             h.make_node("Sigmoid", ["cf"], ["cls"]),
             h.make_node("Concat", ["grid", "cls"], ["out"], axis=1)]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [1, 1, 8, 8])],
                  [h.make_tensor_value_info("out", T.FLOAT, [1, 6, ANCHORS])], inits)


def _mask(classes: int) -> onnx.ModelProto:
    """``(C, 16, 16)`` map: one Sigmoid channel (logit ``x - 3``) or a Softmax over classes
    whose class 0 wins wherever ``x`` is small."""
    w = np.full((classes, 1, 1, 1), 1.0)
    b = np.full(classes, -3.0)
    if classes > 1:
        w[0], b[0] = 0.0, 0.0
    act = h.make_node("Sigmoid", ["c"], ["y"]) if classes == 1 else \
        h.make_node("Softmax", ["c"], ["y"], axis=1)
    return _model([h.make_node("Conv", ["x", "w", "b"], ["c"]), act],
                  [h.make_tensor_value_info("x", T.FLOAT, [1, 1, 16, 16])],
                  [h.make_tensor_value_info("y", T.FLOAT, [1, classes, 16, 16])],
                  [_f(w, "w"), _f(b, "b")])


def _ctc() -> onnx.ModelProto:
    """``(8, 5)`` per-step class scores: the blank (class 0) wins wherever ``x`` is small."""
    return _model([h.make_node("Add", ["x", "bias"], ["s"]),
                   h.make_node("Softmax", ["s"], ["y"], axis=-1)],
                  [h.make_tensor_value_info("x", T.FLOAT, [1, 8, 5])],
                  [h.make_tensor_value_info("y", T.FLOAT, [1, 8, 5])],
                  [_f([3.0, 0.0, 0.0, 0.0, 0.0], "bias")])


def _binary() -> onnx.ModelProto:
    """One Sigmoid score per sample, ``sigmoid(sum(x) - 2)``."""
    return _model([h.make_node("MatMul", ["x", "ones"], ["s"]),
                   h.make_node("Add", ["s", "b"], ["l"]),
                   h.make_node("Sigmoid", ["l"], ["p"])],
                  [h.make_tensor_value_info("x", T.FLOAT, ["N", 4])],
                  [h.make_tensor_value_info("p", T.FLOAT, ["N", 1])],
                  [_f(np.ones((4, 1)), "ones"), _f(-2.0, "b")])


@dataclass(frozen=True)
class Case:
    name: str
    model: Callable[[], onnx.ModelProto]
    empty: dict[str, np.ndarray]              # data on which FP32 gives nothing to judge
    rich: dict[str, np.ndarray]               # data on which it does
    refusal: str                              # what the one line says
    evidence_key: str                         # the report's count of what FP32 gave
    extra: tuple[str, ...] = ()


_RNG = np.random.default_rng(5)
_IMG8 = _RNG.uniform(0, 1, (6, 1, 8, 8)).astype(np.float32)
_IMG16 = _RNG.uniform(0, 6, (6, 1, 16, 16)).astype(np.float32)

CASES = [
    Case("detection", _detector, {"x": np.zeros((6, 1, 8, 8), np.float32)}, {"x": _IMG8 + 1.0},
         "target x86-cpu: detection_f1 cannot judge this artifact: the FP32 model detects "
         "nothing in the 6 validation samples (score threshold 0.25)", "detections_reference"),
    Case("segmentation", lambda: _mask(1), {"x": np.zeros((6, 1, 16, 16), np.float32)},
         {"x": _IMG16}, "target x86-cpu: mask_iou cannot judge this artifact: the FP32 mask is "
         "empty in the 6 validation samples (threshold 0.5)", "mask_pixels_reference"),
    Case("text-detection", lambda: _mask(1), {"x": np.zeros((6, 1, 16, 16), np.float32)},
         {"x": _IMG16}, "mask_iou cannot judge this artifact: the FP32 mask is empty in the 6 "
         "validation samples (threshold 0.3)", "mask_pixels_reference",
         ("--task", "text-detection")),
    Case("segmentation-classes", lambda: _mask(3), {"x": np.zeros((6, 1, 16, 16), np.float32)},
         {"x": _IMG16}, "mask_iou cannot judge this artifact: the FP32 model labels every pixel "
         "class 0 (of 3) in the 6 validation samples", "pixels_outside_top_class_reference"),
    Case("ctc", _ctc, {"x": np.zeros((6, 8, 5), np.float32)},
         {"x": (_RNG.standard_normal((6, 8, 5)) * 4).astype(np.float32)},
         "one_minus_cer cannot judge this artifact: the FP32 model reads no character in the 6 "
         "validation samples (greedy decode, blank class 0)", "characters_reference"),
    Case("binary", _binary, {"x": np.zeros((6, 4), np.float32)},
         {"x": _RNG.uniform(0, 1, (6, 4)).astype(np.float32)},
         "decision_agreement cannot judge this artifact: the FP32 score is at or below 0.5 at "
         "every one of the 6 validation samples: its decision never changes",
         "rarer_decision_samples_reference"),
    Case("vad", _stateful, {"x": np.zeros((6, 1, 4), np.float32)},
         {"x": _RNG.standard_normal((6, 1, 4)).astype(np.float32)},
         "decision_agreement cannot judge this artifact: the FP32 score is at or below 0.5 at "
         "every step of the 6 validation samples", "rarer_decision_steps_reference",
         ("--input-value", "sr=16000")),
]


def _build(cli, case: Case, tmp_path: Path, data: dict[str, np.ndarray], tag: str,  # type: ignore[no-untyped-def]
           *extra: str):
    model = tmp_path / f"{case.name}.onnx"
    onnx.save_model(case.model(), str(model))
    np.savez(tmp_path / f"{tag}.npz", **data)
    return cli("build", model, "--name", "m", "--version", "1.0.0", "--target", "x86-cpu",
               "--precision", "fp32", "--validation", tmp_path / f"{tag}.npz",
               "--out", tmp_path / tag, *case.extra, *extra)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_nothing_to_judge_is_refused_and_evidence_is_recorded(
        cli, keys_home: Path, tmp_path: Path, case: Case) -> None:
    refused = _build(cli, case, tmp_path, case.empty, "empty")
    _assert_refused(refused, tmp_path / "empty", 1, case.refusal)
    assert "--gate-metric cosine" in refused.err and "nothing was built" in refused.err
    assert "dropped" not in refused.err                 # not reported as a 100 % drop

    ok = _build(cli, case, tmp_path, case.rich, "rich", "--json")
    assert ok.code == 0, ok.err
    task = json.loads(ok.out)["targets"]["x86-cpu"]["metrics"]["accuracy"]["task"]
    assert task["details"][case.evidence_key] > 0, task
    assert task["drop"] == 0.0


def test_forced_cosine_gate_builds_what_the_task_metric_cannot_judge(
        cli, keys_home: Path, tmp_path: Path) -> None:
    res = _build(cli, CASES[0], tmp_path, CASES[0].empty, "empty", "--gate-metric", "cosine",
                 "--json")
    assert res.code == 0, res.err
    acc = json.loads(res.out)["targets"]["x86-cpu"]["metrics"]["accuracy"]
    assert acc["gate_metric"] == "cosine"
    assert acc["task"]["details"]["detections_reference"] == 0      # still reported


def test_python_api_refuses_before_building(tmp_path: Path) -> None:
    from converters.api import BuildRequest
    from converters.build import build
    from edgeops.errors import AccuracyGateError

    model = tmp_path / "det.onnx"
    onnx.save_model(_detector(), str(model))
    np.savez(tmp_path / "val.npz", x=np.zeros((3, 1, 8, 8), np.float32))
    req = BuildRequest(model=model, name="m", version="1.0.0", targets=("x86-cpu", "arm64-cpu"),
                       validation=tmp_path / "val.npz")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(AccuracyGateError, match=r"^targets x86-cpu, arm64-cpu: detection_f1 "
                                                r"cannot judge this artifact: .* the 3 "):
        build(req, lambda _msg: None, work)
    assert not any(p.suffix == ".onnx" for p in work.rglob("*"))
