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


def _exposed(model: Any, names: Sequence[str]) -> Any:
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    return m


def _session(model: Any) -> Any:
    """A one-thread CPU session for ``model`` (a ModelProto; over 2 GB via a temporary file)."""
    import tempfile

    import onnxruntime as ort

    from converters.onnx_utils import PROTOBUF_SAFE_BYTES, proto_bytes, save_model
    from converters.ort_session import exact_products

    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.intra_op_num_threads = 1
    exact_products(so)          # the quantised model's activations as the target computes them
    if proto_bytes(model) > PROTOBUF_SAFE_BYTES:
        # Over 2 GB there are no bytes to hand over: ORT reads it from disk, weights external.
        with tempfile.TemporaryDirectory(prefix="edgeops-sensitivity-") as tmp:
            path = save_model(model, Path(tmp) / "exposed.onnx")
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    else:
        sess = ort.InferenceSession(model.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
    return sess


_SLICE_ENERGY_FLOOR = 1e-6   # slices below this share of the mean slice energy are all but zero


class _SliceError:
    """Relative error of the worst slice along any axis (the whole tensor included), streamed.

    The gate reads the worst channel (converters/tasks/channels). A tensor whose one channel is
    far larger than the rest, quantised per tensor, crushes the small channels while its
    whole-tensor error stays tiny (the large channel holds the energy); ranked on that, the
    culprit can come after harmless tensors and the search give up. Every axis is tried, as the
    channel axis of an inner tensor is not known (axis 1 in NCHW, the last in [N, T, C]).
    Samples are added one at a time and reduced to per-slice sums at once, so memory is one
    sample's activations, not every sample's (a 640x640 detector held about 10 GB that way).
    """

    def __init__(self) -> None:
        self.num = self.den = 0.0
        self.per_axis: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.shape: tuple[int, ...] | None = None

    def add(self, f: Any, q: Any) -> None:
        f64, q64 = np.asarray(f, np.float64), np.asarray(q, np.float64)
        if f64.shape != q64.shape:
            return
        err, sig = (q64 - f64) ** 2, f64**2
        self.num += float(err.sum())
        self.den += float(sig.sum())
        if self.shape is None:
            self.shape = f64.shape
        if f64.shape != self.shape:      # dynamic shapes: slices do not line up across samples
            self.per_axis.clear()
            self.shape = ()
            return
        for ax in range(f64.ndim):
            if f64.shape[ax] < 2:
                continue
            rest = tuple(i for i in range(f64.ndim) if i != ax)
            e, s = err.sum(axis=rest), sig.sum(axis=rest)
            pe, ps = self.per_axis.get(ax, (np.zeros_like(e), np.zeros_like(s)))
            self.per_axis[ax] = (pe + e, ps + s)

    def value(self) -> float:
        worst = self.num / self.den if self.den > 0 else 0.0
        for e, s in self.per_axis.values():
            live = s > _SLICE_ENERGY_FLOOR * float(s.mean())
            if live.any():
                worst = max(worst, float((e[live] / s[live]).max()))
        return worst


def rank_sensitive_nodes(fp32_model: Any, qdq_path: Path, samples: SampleSet,
                         candidates: Sequence[str]) -> list[tuple[str, tuple[str, ...], float]]:
    """``(tensor, nodes to keep float, added relative error)``, most harmful first.

    A QDQ pair sits on a *tensor*, shared by its producer and its consumers: keeping it float
    means keeping all of them float. The error a pair adds is the tensor's relative error after
    its DequantizeLinear minus the error it already had before its QuantizeLinear.
    """
    import onnx

    qdq = onnx.load(str(qdq_path))
    q_tensors = {o for n in qdq.graph.node for o in n.output}
    cands = set(candidates)
    producer = {o: n.name for n in fp32_model.graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in fp32_model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
    graph_inputs = {i.name for i in fp32_model.graph.input}
    tensors = sorted(t for t in (set(producer) | graph_inputs) if t + _DQ_SUFFIX in q_tensors)
    if not tensors:
        return []
    produced = [t for t in tensors if t not in graph_inputs]
    q_names = sorted({t + _DQ_SUFFIX for t in tensors} | {t for t in produced if t in q_tensors})
    # (fp32 tensor, quantised tensor) pairs whose error is measured: after each pair's
    # DequantizeLinear, and before its QuantizeLinear where the QDQ model has the tensor
    pairs = {(t, t + _DQ_SUFFIX) for t in tensors} | {
        (t, t) for t in tensors if t not in graph_inputs and t in q_tensors}
    acc = {pair: _SliceError() for pair in pairs}
    f_sess = _session(_exposed(fp32_model, produced)) if produced else None
    q_sess = _session(_exposed(qdq, q_names))
    for feed in samples.iter_samples():     # one sample's activations in memory at a time
        f_val = dict(zip(produced, f_sess.run(produced, feed), strict=True)) if f_sess else {}
        f_val.update({t: feed[t] for t in tensors if t in graph_inputs})
        q_val = dict(zip(q_names, q_sess.run(q_names, feed), strict=True))
        for f_name, q_name in pairs:
            acc[(f_name, q_name)].add(f_val[f_name], q_val[q_name])
        del f_val, q_val

    def rel_err(t: str, qname: str) -> float:
        return acc[(t, qname)].value()

    ranked = []
    for t in tensors:
        before = 0.0 if t in graph_inputs or t not in q_tensors else rel_err(t, t)
        added = rel_err(t, t + _DQ_SUFFIX) - before
        nodes = tuple(sorted({n for n in (producer.get(t), *consumers.get(t, []))
                              if n is not None and n in cands}))
        if nodes:
            ranked.append((t, nodes, added))
    ranked.sort(key=lambda x: (-x[2], x[0]))
    return ranked
