"""benchmarks/_fullint_localise: the simulated quantisation it scores, and where it writes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import _fullint_localise as loc
from benchmarks import converter_tflite
from converters.tflite._ir import Graph, Quant
from converters.tflite._quant import _act_quant, _sym_quant
from converters.tflite._runtime import LiteRT

_SCALE, _ZP = 0.05, 3


class _Lowered:
    def __init__(self, g: Graph) -> None:
        self.graph = g


def _conv_graph() -> tuple[_Lowered, Graph, np.ndarray]:
    """x (1, 4, 4, 2) -> 1x1 CONV_2D (2 -> 3 channels, unequal channel ranges) -> y; and a copy
    whose ``y`` is int8 at (_SCALE, _ZP), as the int8 artifact's graph would carry it."""
    rs = np.random.default_rng(0)
    g = Graph()
    g.inputs = [g.add_tensor("x", (1, 4, 4, 2))]
    w = (rs.standard_normal((3, 1, 1, 2)) * np.array([1.0, 0.05, 3.0]).reshape(3, 1, 1, 1))
    g.add_op("CONV_2D", ["x", g.add_const("w", w.astype(np.float32)),
                         g.add_const("b", np.zeros(3, np.float32))],
             [g.add_tensor("y", (1, 4, 4, 3))], "Conv_0", padding=1, strideH=1, strideW=1,
             dilationHFactor=1, dilationWFactor=1)
    g.outputs = ["y"]
    q = copy.deepcopy(g)
    q.tensors["y"].dtype = "int8"
    q.tensors["y"].quant = Quant(np.array([_SCALE], np.float32), np.array([_ZP], np.int64), 0)
    return _Lowered(g), q, rs.uniform(-2, 2, (1, 4, 4, 2)).astype(np.float32)


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    return LiteRT(model).run_float([x])[0].astype(np.float64)


def _float(k: int, kind: str) -> bool:
    return False


def test_simulated_int8_activations_sit_on_the_artifacts_grid() -> None:
    low, q, x = _conv_graph()
    ref = _run(loc._simulated(low, q, _float, set(), set(), {}), x)
    got = _run(loc._simulated(low, q, _float, {0}, set(), {}), x)
    levels = got / _SCALE + _ZP
    assert np.allclose(levels, np.round(levels), atol=1e-3)
    inside = (ref > (-128 - _ZP) * _SCALE) & (ref < (127 - _ZP) * _SCALE)
    assert np.abs(got - ref)[inside].max() <= _SCALE / 2 + 1e-6
    assert not np.allclose(got, ref)


def test_simulated_int16_activations_are_finer_than_int8() -> None:
    low, q, x = _conv_graph()
    ref = _run(loc._simulated(low, q, _float, set(), set(), {}), x)
    lo, hi = float(ref.min()), float(ref.max())
    got = _run(loc._simulated(low, q, _float, set(), {0}, {"y": (lo, hi)}), x)
    assert np.abs(got - ref).max() <= max(abs(lo), abs(hi)) / 32767 / 2 + 1e-6


@pytest.mark.parametrize("axis", [None, 0])
def test_simulated_weights_are_the_writers_rounding(axis: int | None) -> None:
    low, q, x = _conv_graph()
    got = _run(loc._simulated(low, q, lambda k, kind: axis, set(), set(), {}), x)
    w = low.graph.tensors["w"].data
    assert w is not None
    wq, quant = _sym_quant(w, axis)
    deq = wq * quant.scale.reshape(-1 if axis == 0 else 1, 1, 1, 1)
    want = np.einsum("nhwc,oc->nhwo", x.astype(np.float64), deq[:, 0, 0, :])
    assert np.allclose(got, want, atol=1e-5)
    # per tensor, the channel with the small weights is rounded coarsely: a real difference
    other = _run(loc._simulated(low, q, lambda k, kind: 0 if axis is None else None,
                                set(), set(), {}), x)
    assert not np.allclose(got[..., 1], other[..., 1], atol=1e-5)


def test_localise_run_writes_its_own_results_files(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    def target(v: float) -> dict[str, Any]:
        return {"int8_artifact": v, "int8_artifact_input_noise_0.5": [v, v, v],
                "int8_artifact_hard_swish_inputs_clamped": v,
                "int8_artifact_sigmoid_input_clipped": v,
                "simulated": {"weights only": v}, "stem_ops": ["CONV_2D Conv_0"],
                "per_channel_weights_only": 0.97,
                "per_tensor_cost_by_layer": [{"op": "CONV_2D Conv_0", "iou": 0.9,
                                              "channel_max_over_median": 3.0}]}

    res = {"model": "ocr-det-640", "samples": {"calibration": 2, "validation": 2},
           "fp32_input_noise": {"0.5": 0.97}, "targets": {"edgetpu": target(0.6),
                                                          "ethos-u": target(0.5)}}
    monkeypatch.setattr(loc, "localise", lambda name, samples: res)
    monkeypatch.setattr(converter_tflite, "RESULTS", tmp_path)
    assert converter_tflite.main(["--fullint-localise"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "converter_tflite.issue16-fullintdbnet.json", "converter_tflite.issue16-fullintdbnet.md"]
    doc = json.loads((tmp_path / "converter_tflite.issue16-fullintdbnet.json").read_text())
    assert doc["results"] == res
    md = (tmp_path / "converter_tflite.issue16-fullintdbnet.md").read_text()
    assert "| int8 artifact (real, LiteRT) | 0.6000 | 0.5000 |" in md
    assert "* CONV_2D Conv_0: 0.9000 (largest channel max / median 3)" in md


def test_clipped_ranges_touch_only_tensors_read_by_that_op_alone() -> None:
    g = Graph()
    g.inputs = [g.add_tensor("x", (1, 4))]
    for name in ("a", "h", "b", "s", "y"):
        g.add_tensor(name, (1, 4))
    g.add_op("HARD_SWISH", ["x"], ["a"])
    g.add_op("HARD_SWISH", ["a"], ["h"])      # "a": read by HARD_SWISH alone
    g.add_op("ADD", ["a", "h"], ["b"])        # ... and by an ADD: kept
    g.add_op("HARD_SWISH", ["b"], ["s"])      # "b": read by HARD_SWISH alone
    g.add_op("LOGISTIC", ["s"], ["y"])
    g.outputs = ["y"]
    ranges = {"x": (-50.0, 10.0), "a": (-50.0, 10.0), "b": (-50.0, 10.0), "s": (-20.0, 30.0),
              "y": (0.0, 1.0)}
    hs = loc._clipped(g, ranges, "HARD_SWISH", loc._HSWISH_ZERO)
    assert hs["a"] == ranges["a"] and hs["s"] == ranges["s"]
    assert hs["x"] == ranges["x"]             # a graph input: the I/O contract
    assert hs["b"] == (-3.0 - 13.0 / 254, 10.0)
    # one step of the clipped grid below -3: the clamp dequantises at or below -3
    q = _act_quant(*hs["b"])
    assert (-128 - int(q.zero_point[0])) * float(q.scale[0]) <= -3.0
    sig = loc._clipped(g, ranges, "LOGISTIC", loc._SIGMOID_SATURATED)
    assert sig == {**ranges, "s": loc._SIGMOID_SATURATED}
