"""Empirical bias correction (Nagel et al. 2019, section 4.2; Finkelstein et al. 2019).

Rounding a layer's weights to 8 bits shifts the mean of its output: ``E[(W_q - W) x]`` is not
zero per output channel, and for depthwise layers with few weights per channel it is large
enough to move the next layer's inputs. This pass quantises each Conv/Gemm/MatMul weight the
way the plan will (per-channel symmetric int8, 7 bits with ``reduce_range``), feeds the layer's
*float* input from calibration data through the weight error alone (an extra Conv with weights
``W_q - W`` on the same input, reduced to a per-channel mean), and subtracts that mean from the
bias. The FP32 model is changed on purpose: its quantised build then has the float model's
per-channel output means.

A layer kept float later (performance- or accuracy-aware) must get its original bias back:
:meth:`BiasCorrection.restore` writes that variant. Layers without a bias, with weights shared
by several nodes, or whose weights are not constants are left alone (counted in the report).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters.quant._graph import Graph, attr
from converters.quant.base import PassOutcome, setting

__all__ = ["BiasCorrection", "BiasCorrectionSettings", "fake_quant_weight"]


@dataclass(frozen=True)
class BiasCorrectionSettings:
    samples: int = setting(16, "calibration samples used to measure the mean shift (from the start)")
    reduce_range: bool = setting(False, "weights use 7 bits (x86 without VNNI), as the plan says")
    per_tensor_ops: tuple[str, ...] = setting(
        (), "op types (Conv, Gemm) whose weights the target rounds per tensor, not per channel "
            "(full-integer TFLite: every one on Edge TPU, Gemm as FULLY_CONNECTED elsewhere)")


def fake_quant_weight(w: np.ndarray, reduce_range: bool = False, axis: int = 0,
                      per_tensor: bool = False) -> np.ndarray:
    """Per-channel (or per-tensor) symmetric int8 quantise-dequantise, as ORT's quantiser and
    the TFLite writer round weights."""
    qmax = 64.0 if reduce_range else 127.0
    moved = np.moveaxis(w.astype(np.float64), axis, 0)
    amax = np.abs(moved.reshape(moved.shape[0], -1)).max(1)
    if per_tensor:
        amax = np.full_like(amax, amax.max(initial=0.0))
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32).astype(np.float64)
    shape = (-1, *[1] * (moved.ndim - 1))
    q = np.clip(np.round(moved / scale.reshape(shape)), -qmax, qmax) * scale.reshape(shape)
    return np.moveaxis(q, 0, axis)


@dataclass
class _Target:
    node: str
    bias: str
    kind: str                      # "Conv" | "Gemm"
    original: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    nearest: np.ndarray | None = None    # corrected for round-to-nearest (AdaRound's layers)


def _targets(model: Any) -> tuple[list[_Target], int]:
    g = Graph(model)
    out: list[_Target] = []
    left = 0
    for n in model.graph.node:
        if n.op_type not in ("Conv", "Gemm"):
            continue
        ok = (len(n.input) > 2 and n.input[2] and g.private_const(n.input[1])
              and g.private_const(n.input[2]))
        if n.op_type == "Gemm":
            ok = ok and float(attr(n, "alpha", 1.0)) == 1.0 and float(attr(n, "beta", 1.0)) == 1.0
            b = g.const(n.input[2]) if ok else None
            ok = ok and b is not None and b.ndim == 1
        if ok:
            out.append(_Target(n.name, n.input[2], n.op_type))
        else:
            left += 1
    return out, left


class BiasCorrection:
    name = "bias_correction"

    def __init__(self, settings: BiasCorrectionSettings | None = None,
                 reference: dict[str, np.ndarray] | None = None) -> None:
        """``reference``: the FP32 weights (by initialiser) of layers an earlier pass already
        put on the quantiser's grid (AdaRound): their shift is measured against those."""
        self.settings = settings or BiasCorrectionSettings()
        self.reference = reference or {}
        self.targets: list[_Target] = []

    def applies(self, model: Any) -> str | None:
        return None if _targets(model)[0] else "no Conv/Gemm with a constant weight and bias"

    def run(self, model: Any, samples: Any) -> tuple[Any, PassOutcome]:
        import onnx

        from converters.quant._stats import head_samples, stream_tensors

        m = onnx.ModelProto()
        m.CopyFrom(model)
        targets, left = _targets(m)
        g = Graph(m)
        nodes = {n.name: n for n in m.graph.node}
        probe = onnx.ModelProto()
        probe.CopyFrom(m)
        names: list[str] = []
        for t in targets:
            n = nodes[t.node]
            w = g.const(n.input[1])
            assert w is not None
            axis = 0
            if t.kind == "Gemm" and int(attr(n, "transB", 0)) == 0:
                axis = 1
            ref = self.reference.get(n.input[1])
            per_tensor = t.kind in self.settings.per_tensor_ops
            rounded = fake_quant_weight(w, self.settings.reduce_range, axis, per_tensor)
            names.append(_probe(probe, n, t, rounded - (w if ref is None else ref), ""))
            if ref is not None:     # the same layer rounded to nearest, should AdaRound be dropped
                _probe(probe, n, t, fake_quant_weight(ref, self.settings.reduce_range, axis,
                                                      per_tensor) - ref, "_nearest")
                names.append(f"{t.node}__bc_shift_nearest")
        sums: dict[str, np.ndarray] = {}

        def add(arrays: dict[str, np.ndarray]) -> None:
            for k, v in arrays.items():
                sums[k] = sums.get(k, 0) + np.asarray(v, np.float64)

        seen = stream_tensors(probe, names, head_samples(samples, self.settings.samples), add)
        rel: list[float] = []
        for t in targets:
            b = g.const(t.bias)
            assert b is not None
            t.original = b.copy()
            shift = sums[f"{t.node}__bc_shift"] / max(1, seen)
            near = sums.get(f"{t.node}__bc_shift_nearest")
            if near is not None:
                t.nearest = (b.astype(np.float64) - near / max(1, seen)).astype(b.dtype)
            g.set_const(t.bias, b.astype(np.float64) - shift)
            rel.append(float(np.abs(shift).mean()))
        self.targets = targets
        return m, PassOutcome(
            self.name, "applied",
            f"{len(targets)} layer bias(es) corrected on {seen} sample(s); {left} layer(s) "
            "without a private constant bias left alone",
            {"layers": len(targets), "left_alone": left, "samples": seen,
             "median_abs_shift": float(f"{np.median(rel):.4g}") if rel else 0.0})

    def restore(self, model_path: Path, exclude: set[str], out: Path) -> Path:
        """``model_path`` with the original bias of every corrected layer in ``exclude``."""
        import onnx

        from converters.onnx_utils import save_model

        if not any(t.node in exclude for t in self.targets):
            return model_path
        m = onnx.load(str(model_path))
        self.restore_into(m, exclude)
        return save_model(m, out)

    def nearest_into(self, model: Any, nodes: set[str]) -> None:
        """Biases corrected for round-to-nearest weights, for layers in ``nodes`` whose
        weights AdaRound had re-rounded (used when the build drops AdaRound's rounding)."""
        g = Graph(model)
        for t in self.targets:
            if t.node in nodes and t.nearest is not None:
                g.set_const(t.bias, t.nearest)

    def restore_into(self, model: Any, exclude: set[str]) -> bool:
        """Put back the original bias of every corrected layer in ``exclude`` (in place)."""
        back = [t for t in self.targets if t.node in exclude]
        g = Graph(model)
        for t in back:
            g.set_const(t.bias, t.original)
        return bool(back)


def _probe(probe: Any, n: Any, t: _Target, dw: np.ndarray, suffix: str) -> str:
    """Add ``ReduceMean(op(x, dw))`` per output channel to ``probe``; returns its output."""
    from onnx import helper, numpy_helper

    wname, out = f"{t.node}__bc_dw{suffix}", f"{t.node}__bc_shift{suffix}"
    probe.graph.initializer.append(numpy_helper.from_array(dw.astype(np.float32), wname))
    op = helper.make_node(t.kind, [n.input[0], wname], [out + "_map"],
                          name=f"{t.node}__bc_{t.kind.lower()}{suffix}")
    keep = None if t.kind == "Conv" else ("transA", "transB")
    op.attribute.extend([a for a in n.attribute if keep is None or a.name in keep])
    axes = [0, *range(2, dw.ndim)] if t.kind == "Conv" else [0]
    probe.graph.node.extend([op, _reduce_mean(probe, out + "_map", out, axes)])
    return out


def _reduce_mean(model: Any, src: str, out: str, axes: list[int]) -> Any:
    """ReduceMean over ``axes`` (attribute before opset 18, input from 18 on)."""
    from onnx import helper, numpy_helper

    if _opset(model) < 18:
        return helper.make_node("ReduceMean", [src], [out], axes=axes, keepdims=0,
                                name=f"{out}_mean")
    model.graph.initializer.append(numpy_helper.from_array(np.array(axes, np.int64),
                                                           f"{out}_axes"))
    return helper.make_node("ReduceMean", [src, f"{out}_axes"], [out], keepdims=0,
                            name=f"{out}_mean")


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
