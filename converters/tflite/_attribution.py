"""Which layers limit a full-integer artifact: the quantisation error each one adds.

A full-integer build that misses its budget cannot float the culprits (the ONNX path's
answer), so it must say which layers cost the accuracy and what budget the artifact would need.
Both graphs run in LiteRT with every tensor kept (reference kernels, delegates off) on a few
validation samples; each tensor of the int8 graph is dequantised and compared with the same
tensor of the float graph it was quantised from (the rewrite keeps activation names). The error
of a tensor is its noise-to-signal ratio ``sum (q - f)^2 / sum f^2``; the error an op *adds* is
its output's minus the largest of its inputs', so a layer downstream of a bad one is not
blamed for what it inherited. Layers are named by their ONNX node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from converters.tflite._ir import Graph

__all__ = ["LayerError", "layer_errors", "limiting_layers"]

_SKIP = {"QUANTIZE", "DEQUANTIZE"}


@dataclass(frozen=True)
class LayerError:
    """The noise-to-signal ratio one ONNX node's ops add to the int8 activations."""

    node: str
    op: str
    added: float


def _values(model: bytes, feeds: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor's real value after one run (int8 tensors dequantised)."""
    from converters.tflite._runtime import LiteRT

    rt = LiteRT(model, preserve=True)
    rt.run(rt.quantise_inputs(feeds))
    out: dict[str, np.ndarray] = {}
    for d in rt.it.get_tensor_details():
        try:
            v = rt.it.get_tensor(d["index"])
        except ValueError:
            continue
        if v.dtype == np.int8:
            scale, zp = d["quantization"]
            if not scale:
                continue
            v = (v.astype(np.float64) - zp) * scale
        elif v.dtype != np.float32:
            continue
        out[d["name"].removesuffix("__int8")] = np.asarray(v, np.float64)
    return out


def layer_errors(float_model: bytes, int8_model: bytes, int8_graph: Graph,
                 samples: Sequence[Sequence[np.ndarray]]) -> list[LayerError]:
    """Error added per ONNX node, largest first, over ``samples`` (float inputs in the
    artifact's layout)."""
    noise: dict[str, float] = {}
    signal: dict[str, float] = {}
    for feeds in samples:
        ref = _values(float_model, feeds)
        got = _values(int8_model, feeds)
        for name, q in got.items():
            f = ref.get(name)
            if f is None or f.shape != q.shape:
                continue
            noise[name] = noise.get(name, 0.0) + float(np.sum((q - f) ** 2))
            signal[name] = signal.get(name, 0.0) + float(np.sum(f ** 2))

    def err(t: str) -> float | None:
        t = t.removesuffix("__int8")
        return noise[t] / signal[t] if t in noise and signal[t] > 0 else None

    added: dict[str, LayerError] = {}
    for op in int8_graph.ops:
        if op.kind in _SKIP:
            continue
        outs = [e for o in op.outputs if (e := err(o)) is not None]
        if not outs:
            continue
        ins = [e for i in op.inputs if i and int8_graph.tensors[i].data is None
               and (e := err(i)) is not None]
        gain = max(outs) - max(ins, default=0.0)
        node = op.source or op.outputs[0]          # an unnamed ONNX node: its output tensor
        prev = added.get(node)
        if prev is None or gain > prev.added:
            added[node] = LayerError(node, op.kind, gain)
    return sorted(added.values(), key=lambda e: (-e.added, e.node))


def limiting_layers(errors: Sequence[LayerError], top: int = 3) -> str:
    """``Conv_7 (DEPTHWISE_CONV_2D, 41% of the error added), ...`` for the top layers."""
    total = sum(e.added for e in errors if e.added > 0)
    if total <= 0:
        return "no layer adds measurable error"
    return ", ".join(f"{e.node} ({e.op}, {e.added / total:.0%} of the error added)"
                     for e in errors[:top] if e.added > 0)
