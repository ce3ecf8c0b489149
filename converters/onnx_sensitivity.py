"""Which quantised nodes hurt accuracy most: match activations of the QDQ model against FP32.

Both models are run on a few validation samples with every float activation exposed as an
output. For each tensor the relative error ``|q - f|^2 / |f|^2`` is measured; a node's
sensitivity is the error it *adds*: error of its output minus the worst error of its inputs.
Keeping the top nodes in float removes the largest sources of error first, which is what the
accuracy-aware pass needs, instead of bisecting blindly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from converters.data import SampleSet

__all__ = ["rank_sensitive_nodes"]

_DQ_SUFFIX = "_DequantizeLinear_Output"


def _exposed(model: Any, names: Sequence[str]) -> bytes:
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    return bytes(m.SerializeToString())


def _run(model_bytes: bytes, samples: SampleSet, names: Sequence[str]) -> dict[str, list[Any]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    out: dict[str, list[Any]] = {n: [] for n in names}
    for feed in samples.iter_samples():
        for n, v in zip(names, sess.run(list(names), feed), strict=True):
            out[n].append(np.asarray(v))
    return out


def rank_sensitive_nodes(fp32_model: Any, qdq_path: Path, samples: SampleSet,
                         candidates: Sequence[str]) -> list[tuple[str, float]]:
    """``(node name, added relative error)`` for ``candidates``, most sensitive first."""
    import onnx

    qdq = onnx.load(str(qdq_path))
    q_tensors = {o for n in qdq.graph.node for o in n.output}
    nodes = {n.name: n for n in fp32_model.graph.node if n.name in set(candidates)}
    f_names = sorted({t for n in nodes.values() for t in (*n.input, *n.output)
                      if t and t in {o for m in fp32_model.graph.node for o in m.output}})
    # In the QDQ model a float tensor T is consumed as T_DequantizeLinear_Output: compare that,
    # so the error includes the quantisation of T itself.
    q_names = {t: (t + _DQ_SUFFIX if t + _DQ_SUFFIX in q_tensors else t) for t in f_names
               if t in q_tensors or t + _DQ_SUFFIX in q_tensors}
    f_names = [t for t in f_names if t in q_names]
    if not f_names:
        return []
    f_out = _run(_exposed(fp32_model, f_names), samples, f_names)
    q_out = _run(_exposed(qdq, [q_names[t] for t in f_names]), samples,
                 [q_names[t] for t in f_names])
    err: dict[str, float] = {}
    for t in f_names:
        num = sum(float(((np.asarray(q, np.float64) - np.asarray(f, np.float64)) ** 2).sum())
                  for f, q in zip(f_out[t], q_out[q_names[t]], strict=True)
                  if np.issubdtype(np.asarray(f).dtype, np.floating)
                  and np.asarray(f).shape == np.asarray(q).shape)
        den = sum(float((np.asarray(f, np.float64) ** 2).sum()) for f in f_out[t]
                  if np.issubdtype(np.asarray(f).dtype, np.floating))
        err[t] = num / den if den > 0 else 0.0
    ranked = []
    for name, node in nodes.items():
        outs = [err[o] for o in node.output if o in err]
        ins = [err[i] for i in node.input if i in err]
        if outs:
            ranked.append((name, max(outs) - max(ins, default=0.0)))
    ranked.sort(key=lambda x: (-x[1], x[0]))
    return ranked
