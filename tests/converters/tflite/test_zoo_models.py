"""Pretrained models from the real-model zoo through the TFLite backend, end to end in LiteRT.

Each convertible model is fed real scans (tests/realdata), run in LiteRT and compared with ONNX
Runtime FP32 (max error relative to the output's magnitude, at least 0.01: the issue's 1e-4
bar); the fused
builtins the exporters' patterns must become are counted. Models whose ops the backend does not
lower are refused in one error that names every node, before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from converters.tflite import compatibility_report, convert
from converters.tflite._runtime import LiteRT
from converters.tflite.convert import to_artifact_layout, to_onnx_layout
from edgeops.errors import UnsupportedModelError
from tests.converters.tflite.models import ort_run
from tests.realdata import scans
from tests.realzoo import model_path
from tests.realzoo_made import nucleus_seg
from tests.zoo_inputs import bert_tokens, name_tokens

pytestmark = pytest.mark.slow

# model -> (input shape, builtins that must appear, at least this many; most TRANSPOSEs)
CONVERTIBLE = {
    "ocr-cls": ((1, 3, 48, 192), {"HARD_SWISH": 18}, 0),
    "ocr-det": ((1, 3, 320, 320), {"HARD_SWISH": 24}, 0),
    "ocr-rec": ((1, 3, 48, 320), {"HARD_SWISH": 20, "RSQRT": 5, "BATCH_MATMUL": 4}, 4),
    "ocr-det-small": ((1, 3, 320, 320), {"GELU": 13}, 0),
    # the DFL softmax and the class scores joining the boxes need one each
    "yolov8-doc": ((1, 3, 1024, 1024), {"SPLIT": 8, "SOFTMAX": 1}, 2),
}
# what is still refused, with the shapes that make everything else static
REFUSED = {
    "vad": {"input": (1, 576), "state": (2, 1, 128)},
    "vad-ifless": {"input": (1, 576), "state": (2, 1, 128)},
}


def _image(shape: tuple[int, ...], i: int) -> np.ndarray:
    """A printed-text scan resized (nearest) to ``shape``, normalised to [-1, 1]."""
    img = scans()[i].astype(np.float32) / 255.0
    _, c, hh, ww = shape
    rows = (np.arange(hh) * img.shape[0] / hh).astype(int)
    cols = (np.arange(ww) * img.shape[1] / ww).astype(int)
    x = (img[rows][:, cols] - 0.5) / 0.5
    return np.ascontiguousarray(np.repeat(x[None, None], c, axis=1), np.float32)


@pytest.mark.parametrize("name", sorted(CONVERTIBLE))
def test_zoo_model_runs_in_litert_like_onnxruntime(name: str) -> None:
    shape, builtins, max_transposes = CONVERTIBLE[name]
    m = onnx.load(str(model_path(name)))
    inp = m.graph.input[0].name
    res = convert(m, input_shapes={inp: shape})
    counts = res.graph.op_counts()
    for kind, at_least in builtins.items():
        assert counts.get(kind, 0) >= at_least, (kind, counts)
    assert counts.get("TRANSPOSE", 0) <= max_transposes, counts
    rt = LiteRT(res.model)
    for i in range(2):
        x = _image(shape, i)
        ref = ort_run(m, {inp: x})
        got = rt.run_float([to_artifact_layout(x, res.io_layout[inp])])
        for o, r, g in zip(res.output_names, ref, got, strict=True):
            g = to_onnx_layout(g, res.io_layout[o])
            assert g.shape == r.shape
            # a detector that finds nothing outputs ~1e-7 everywhere: judge it on a 0.01 scale
            err = float(np.abs(g - r).max() / max(float(np.abs(r).max()), 1e-2))
            assert err <= 1e-4, f"{name} {o}: relative error {err:.2e}"
    assert compatibility_report(res.graph, "ethos-u")["dynamic_ops"] == 0


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_zoo_model_with_unlowered_ops_refused_in_one_error(name: str) -> None:
    m = onnx.load(str(model_path(name)))
    with pytest.raises(UnsupportedModelError) as ei:
        convert(m, input_shapes=REFUSED[name])
    msg = ei.value.message
    assert msg.startswith(tuple(f"{k} node(s)" for k in range(1, 100))), msg
    assert "\n" not in ei.value.diagnostics()


def _magika_features(path: Path) -> np.ndarray:
    """magika's v3 features of a file: the first 1024 bytes after leading whitespace (padded
    right) and the last 1024 before trailing whitespace (padded left), padding token 256."""
    data = path.read_bytes()
    beg = list(data[:4096].lstrip()[:1024])
    end = list(data[-4096:].rstrip()[-1024:])
    beg += [256] * (1024 - len(beg))
    end = [256] * (1024 - len(end)) + end
    return np.array([beg + end], np.int32)


def test_magika_classifies_source_files_in_litert_like_onnxruntime() -> None:
    """int32 byte values through one-hot EQUAL/CAST, FULLY_CONNECTED and the norms."""
    m = onnx.load(str(model_path("magika")))
    res = convert(m, input_shapes={"bytes": (1, 2048)})
    counts = res.graph.op_counts()
    assert counts.get("EQUAL") == 1 and counts.get("CAST") == 1, counts
    assert res.graph.tensors[res.graph.inputs[0]].dtype == "int32"
    rt = LiteRT(res.model)
    root = Path(__file__).resolve().parents[3]
    files = [root / "converters/tflite/_lower.py", root / "docs/TFLITE.md",
             root / "pyproject.toml", Path(__file__).with_name("__init__.py")]
    for f in files:
        x = _magika_features(f)
        ref = ort_run(m, {"bytes": x})[0]
        got = rt.run([x])[0]
        err = float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-2))
        assert err <= 1e-4, f"{f.name}: relative error {err:.2e}"
        assert int(got.argmax()) == int(ref.argmax()), f.name
    assert compatibility_report(res.graph, "ethos-u")["dynamic_ops"] == 0


def test_name_encoder_gru_runs_in_litert_like_onnxruntime() -> None:
    """int64 token ids into GATHER, two bidirectional GRUs (linear_before_reset=1) unrolled
    over the fixed length, a bool padding mask into the mean pooling."""
    m = onnx.load(str(model_path("name-encoder")))
    res = convert(m, input_shapes={"src": (1, 12), "src_mask": (1, 12)})
    counts = res.graph.op_counts()
    assert "GRU" not in str(counts) and counts.get("GATHER") == 1, counts
    assert counts.get("TANH", 0) >= 2 * 2 * 12, counts
    rt = LiteRT(res.model)
    feeds = name_tokens(2)
    feeds["src_mask"][1, 9:] = False                       # a shorter name, padded
    for i in range(2):
        x = {k: v[i:i + 1] for k, v in feeds.items()}
        ref = ort_run(m, x)
        got = rt.run([x[k] for k in res.input_names])
        for o, r, g in zip(res.output_names, ref, got, strict=True):
            assert g.shape == r.shape and g.dtype == r.dtype, o
            if r.dtype == np.bool_:
                assert np.array_equal(g, r), o
                continue
            err = float(np.abs(g - r).max() / max(float(np.abs(r).max()), 1e-2))
            assert err <= 1e-4, f"{o}: relative error {err:.2e}"
    assert compatibility_report(res.graph, "ethos-u")["dynamic_ops"] == 0


def _rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-2))


def test_minilm_sentence_encoder_runs_in_litert_like_onnxruntime() -> None:
    """int64 BERT token ids; the attention mask built from bools (Cast to BOOL -> NOT_EQUAL,
    GatherND, And -> LOGICAL_AND) and IsNaN guards (NOT_EQUAL x, x) in the softmax."""
    m = onnx.load(str(model_path("minilm")))
    shapes = dict.fromkeys(("input_ids", "attention_mask", "token_type_ids"), (1, 16))
    res = convert(m, input_shapes=shapes)
    counts = res.graph.op_counts()
    assert counts.get("GATHER_ND") == 1 and counts.get("LOGICAL_AND") == 1, counts
    assert counts.get("NOT_EQUAL", 0) >= 7, counts       # Cast to BOOL + six IsNaN
    rt = LiteRT(res.model)
    feeds = bert_tokens(2)
    feeds["attention_mask"][1, 11:] = 0                    # a shorter sentence, padded
    for i in range(2):
        x = {k: v[i:i + 1] for k, v in feeds.items()}
        ref = ort_run(m, x)
        got = rt.run([x[k] for k in res.input_names])
        for o, r, g in zip(res.output_names, ref, got, strict=True):
            assert g.shape == r.shape, o
            err = _rel_err(g, r)
            assert err <= 1e-4, f"{o}: relative error {err:.2e}"
    assert compatibility_report(res.graph, "ethos-u")["dynamic_ops"] == 0


def test_nucleus_segmenter_runs_in_litert_like_onnxruntime() -> None:
    """A channels-last (N,256,256,1) input and five sub-pixel DepthToSpace (DCR) upsamplers
    that become DEPTH_TO_SPACE; fed printed-text scans in [0, 1]."""
    m = onnx.load(str(nucleus_seg(256)))
    inp = m.graph.input[0].name
    res = convert(m)
    counts = res.graph.op_counts()
    assert counts.get("DEPTH_TO_SPACE") == 5, counts
    assert counts.get("TRANSPOSE", 0) == 0, counts
    rt = LiteRT(res.model)
    for i in range(2):
        x = _image((1, 1, 256, 256), i).transpose(0, 2, 3, 1) * 0.5 + 0.5   # NHWC in [0, 1]
        x = np.ascontiguousarray(x, np.float32)
        ref = ort_run(m, {inp: x})
        got = rt.run_float([to_artifact_layout(x, res.io_layout[inp])])
        for o, r, g in zip(res.output_names, ref, got, strict=True):
            g = to_onnx_layout(g, res.io_layout[o])
            assert g.shape == r.shape, o
            err = _rel_err(g, r)
            assert err <= 1e-4, f"{o}: relative error {err:.2e}"
    assert compatibility_report(res.graph, "ethos-u")["dynamic_ops"] == 0
