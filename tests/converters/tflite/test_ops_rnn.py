"""ONNX GRU unrolled into FULLY_CONNECTED/LOGISTIC/TANH steps, against ONNX Runtime (issue 23)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from converters.tflite import convert
from converters.tflite._runtime import LiteRT
from edgeops.errors import UnsupportedModelError
from tests.converters.tflite.models import ort_run

SEQ, BATCH, IN, HID = 5, 2, 3, 4


def _gru(direction: str, lbr: int, *, bias: bool = True, h0: bool = True,
         extra_attrs: dict[str, object] | None = None, name: str = "gru",
         seq_lens: list[int] | None = None) -> onnx.ModelProto:
    rng = np.random.default_rng(lbr * 10 + len(direction))
    nd = 2 if direction == "bidirectional" else 1
    inits = [nh.from_array((rng.standard_normal((nd, 3 * HID, IN)) * 0.6).astype(np.float32), "W"),
             nh.from_array((rng.standard_normal((nd, 3 * HID, HID)) * 0.6).astype(np.float32),
                           "R")]
    ins = ["x", "W", "R", "", "", ""]
    if bias:
        inits.append(nh.from_array(rng.standard_normal((nd, 6 * HID)).astype(np.float32), "B"))
        ins[3] = "B"
    if seq_lens is not None:
        inits.append(nh.from_array(np.array(seq_lens, np.int32), "lens"))
        ins[4] = "lens"
    if h0:
        inits.append(nh.from_array(rng.standard_normal((nd, BATCH, HID)).astype(np.float32),
                                   "h0"))
        ins[5] = "h0"
    while ins and not ins[-1]:
        ins.pop()
    node = h.make_node("GRU", ins, ["y", "y_h"], hidden_size=HID, direction=direction,
                       linear_before_reset=lbr, name=name, **(extra_attrs or {}))
    g = h.make_graph([node], "t", [h.make_tensor_value_info("x", T.FLOAT, [SEQ, BATCH, IN])],
                     [h.make_tensor_value_info("y", T.FLOAT, [SEQ, nd, BATCH, HID]),
                      h.make_tensor_value_info("y_h", T.FLOAT, [nd, BATCH, HID])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 14)], producer_name="tflite-tests")
    m.ir_version = 8
    return m


CASES = {f"{d}_lbr{lbr}": _gru(d, lbr) for d in ("forward", "reverse", "bidirectional")
         for lbr in (0, 1)}
CASES["forward_no_bias_no_h0"] = _gru("forward", 1, bias=False, h0=False)
CASES["bidirectional_full_seq_lens"] = _gru("bidirectional", 0, seq_lens=[SEQ] * BATCH)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gru_matches_onnxruntime(case: str) -> None:
    m = CASES[case]
    res = convert(m, precision="fp32")
    rt = LiteRT(res.model)
    x = np.random.default_rng(3).standard_normal((SEQ, BATCH, IN)).astype(np.float32)
    ref = ort_run(m, {"x": x})
    got = rt.run([x])
    for r, g in zip(ref, got, strict=True):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


def test_gru_unrolls_into_builtins_every_delegate_runs() -> None:
    counts = convert(CASES["bidirectional_lbr1"], precision="fp32").graph.op_counts()
    # z and r share one LOGISTIC per step and direction
    assert counts["LOGISTIC"] == 2 * SEQ and counts["TANH"] == 2 * SEQ, counts
    # one input projection per direction plus one recurrent FC per step after the first
    # (the constant initial state's projection is computed at build time)
    assert counts["FULLY_CONNECTED"] == 2 + 2 * (SEQ - 1), counts
    # the projection's rows split per step straight into (B, 3H): no RESHAPE
    assert set(counts) <= {"FULLY_CONNECTED", "SPLIT", "SPLIT_V", "ADD", "SUB", "MUL",
                           "LOGISTIC", "TANH", "PACK"}, counts


def test_gru_attribute_combinations_not_lowered_named_at_once() -> None:
    nodes = [_gru("forward", 0, extra_attrs={"clip": 3.0}, name="gru_clip"),
             _gru("forward", 0, extra_attrs={"activations": ["Relu", "Tanh"]},
                  name="gru_relu"),
             _gru("forward", 0, seq_lens=[SEQ, 2], name="gru_short")]
    g = h.make_graph([], "t", [h.make_tensor_value_info("x", T.FLOAT, [SEQ, BATCH, IN])], [])
    for i, m in enumerate(nodes):
        node = m.graph.node[0]
        for init in m.graph.initializer:
            init.name = f"{init.name}{i}"
            g.initializer.append(init)
        node.input[:] = ["x"] + [f"{v}{i}" if v else "" for v in node.input[1:]]
        node.output[:] = [f"y{i}", f"y_h{i}"]
        g.node.append(node)
        g.output.append(h.make_tensor_value_info(f"y_h{i}", T.FLOAT, [1, BATCH, HID]))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 14)])
    m.ir_version = 8
    with pytest.raises(UnsupportedModelError) as ei:
        convert(m, precision="fp32")
    msg = ei.value.message
    assert msg.startswith("3 node(s)"), msg
    for needle in ("gru_clip (GRU with clip)",
                   "gru_relu (GRU activations=relu,tanh (Sigmoid,Tanh only))",
                   "gru_short (GRU with sequence_lens shorter than the sequence)"):
        assert needle in msg, msg


def _lstm(direction: str, *, bias: bool = True, state: bool = True,
          extra_attrs: dict[str, object] | None = None, peepholes: bool = False,
          name: str = "lstm") -> onnx.ModelProto:
    rng = np.random.default_rng(len(direction))
    nd = 2 if direction == "bidirectional" else 1
    inits = [nh.from_array((rng.standard_normal((nd, 4 * HID, IN)) * 0.6).astype(np.float32), "W"),
             nh.from_array((rng.standard_normal((nd, 4 * HID, HID)) * 0.6).astype(np.float32),
                           "R")]
    ins = ["x", "W", "R", "", "", "", "", ""]
    if bias:
        inits.append(nh.from_array(rng.standard_normal((nd, 8 * HID)).astype(np.float32), "B"))
        ins[3] = "B"
    if state:
        for i, k in ((5, "h0"), (6, "c0")):
            inits.append(nh.from_array(rng.standard_normal((nd, BATCH, HID)).astype(np.float32),
                                       k))
            ins[i] = k
    if peepholes:
        inits.append(nh.from_array(rng.standard_normal((nd, 3 * HID)).astype(np.float32), "P"))
        ins[7] = "P"
    while not ins[-1]:
        ins.pop()
    node = h.make_node("LSTM", ins, ["y", "y_h", "y_c"], hidden_size=HID, direction=direction,
                       name=name, **(extra_attrs or {}))
    g = h.make_graph([node], "t", [h.make_tensor_value_info("x", T.FLOAT, [SEQ, BATCH, IN])],
                     [h.make_tensor_value_info("y", T.FLOAT, [SEQ, nd, BATCH, HID]),
                      h.make_tensor_value_info("y_h", T.FLOAT, [nd, BATCH, HID]),
                      h.make_tensor_value_info("y_c", T.FLOAT, [nd, BATCH, HID])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 14)], producer_name="tflite-tests")
    m.ir_version = 8
    return m


LSTM_CASES = {d: _lstm(d) for d in ("forward", "reverse", "bidirectional")}
LSTM_CASES["forward_no_bias_no_state"] = _lstm("forward", bias=False, state=False)


@pytest.mark.parametrize("case", sorted(LSTM_CASES))
def test_lstm_matches_onnxruntime(case: str) -> None:
    m = LSTM_CASES[case]
    res = convert(m, precision="fp32")
    counts = res.graph.op_counts()
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in counts and counts["TANH"] >= 2 * SEQ, counts
    rt = LiteRT(res.model)
    x = np.random.default_rng(4).standard_normal((SEQ, BATCH, IN)).astype(np.float32)
    ref = ort_run(m, {"x": x})
    got = rt.run([x])
    assert len(got) == 3
    for r, g in zip(ref, got, strict=True):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw,reason", [
    ({"peepholes": True}, "LSTM with peepholes"),
    ({"extra_attrs": {"input_forget": 1}}, "LSTM input_forget=1"),
    ({"extra_attrs": {"clip": 2.0}}, "LSTM with clip"),
])
def test_lstm_attribute_combination_not_lowered_is_named(kw: dict[str, object],
                                                         reason: str) -> None:
    with pytest.raises(UnsupportedModelError) as ei:
        convert(_lstm("forward", name="enc", **kw), precision="fp32")  # type: ignore[arg-type]
    assert f"enc ({reason})" in ei.value.message, ei.value.message
