"""SmoothQuant-style migration (Xiao et al. 2023) for MatMul/Gemm inputs with outlier channels.

A MatMul ``X @ W`` whose activation ``X`` has a few channels (last axis) far larger than the
rest quantises badly per tensor: those channels set the step for all. Dividing channel ``k``
of ``X`` by ``s_k`` and multiplying row ``k`` of ``W`` by it is exact; with
``s_k = max|X_k|^alpha / max|W_k|^(1 - alpha)`` the difficulty is shared between activation
and weight (which is quantised per output channel and absorbs it well).

The division must happen *before* the tensor is quantised, so it is folded into the producer
when that is a LayerNormalization (gamma and beta divided) used only by these MatMuls.
Otherwise nothing is done by default (counted in the report): a Mul by ``1/s`` kept float
(``insert_mul``) is exact too, but ORT's quantiser still put a Q/DQ pair on its input after a
quantised MatMul, so the outlier tensor was quantised anyway and the Mul only cost time.
All MatMul/Gemm consumers of one tensor share one ``s`` (e.g. Q, K, V projections of one
LayerNorm). Applied only where a channel's maximum is ``outlier_ratio``
times the median channel's, measured on calibration data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from converters.quant._graph import Graph, attr
from converters.quant.base import PassOutcome, setting

__all__ = ["SmoothQuant", "SmoothQuantSettings", "candidates"]


@dataclass(frozen=True)
class SmoothQuantSettings:
    alpha: float = setting(0.5, "migration strength: 0 keeps activations, 1 moves all to weights")
    outlier_ratio: float = setting(8.0, "apply where max channel |x| / median channel |x| >= this")
    samples: int = setting(16, "calibration samples used for per-channel maxima (from the start)")
    max_scale: float = setting(1e4, "per-channel scale is clamped to [1/max_scale, max_scale]")
    insert_mul: bool = setting(False, "where the producer is not a LayerNormalization, insert a "
                                      "float Mul by 1/s (off: ORT's quantiser still quantised "
                                      "the Mul's input after a quantised MatMul, so nothing "
                                      "was gained and the Mul cost time)")


@dataclass(frozen=True)
class _Site:
    tensor: str                     # the activation all consumers share
    consumers: tuple[str, ...]      # MatMul/Gemm node names
    rows: int                       # K: channels of the activation's last axis


def _weight_rows(g: Graph, n: Any) -> np.ndarray | None:
    """The consumer's weight as [K, N] (rows = activation channels), or None."""
    if len(n.input) < 2 or not g.private_const(n.input[1]):
        return None
    w = g.const(n.input[1])
    if w is None or w.ndim != 2:
        return None
    if n.op_type == "Gemm":
        if int(attr(n, "transA", 0)):
            return None
        return w.T if int(attr(n, "transB", 0)) else w
    return w


def candidates(model: Any) -> list[_Site]:
    """Tensors all of whose consumers are MatMul/Gemm with a private constant 2-D weight."""
    g = Graph(model)
    out: list[_Site] = []
    for tensor, cons in sorted(g.consumers.items()):
        if tensor in g.inits or not cons:
            continue
        ws = [_weight_rows(g, n) if n.op_type in ("MatMul", "Gemm") and n.input[0] == tensor
              else None for n in cons]
        if any(w is None for w in ws):
            continue
        rows = {w.shape[0] for w in ws if w is not None}
        if len(rows) == 1:
            out.append(_Site(tensor, tuple(n.name for n in cons), rows.pop()))
    return out


class SmoothQuant:
    name = "smoothquant"

    def __init__(self, settings: SmoothQuantSettings | None = None) -> None:
        self.settings = settings or SmoothQuantSettings()
        self.float_nodes: dict[str, str] = {}

    def applies(self, model: Any) -> str | None:
        return None if candidates(model) else "no MatMul/Gemm with a constant 2-D weight"

    def run(self, model: Any, samples: Any) -> tuple[Any, PassOutcome]:
        import onnx
        from onnx import helper, numpy_helper

        from converters.quant._stats import head_samples, stream_tensors

        m = onnx.ModelProto()
        m.CopyFrom(model)
        sites = candidates(m)
        amax: dict[str, np.ndarray] = {}

        def add(arrays: dict[str, np.ndarray]) -> None:
            for k, v in arrays.items():
                a = np.abs(np.asarray(v, np.float32)).reshape(-1, v.shape[-1]).max(0)
                amax[k] = np.maximum(amax[k], a) if k in amax else a

        stream_tensors(m, [s.tensor for s in sites],
                       head_samples(samples, self.settings.samples), add)
        g = Graph(m)
        nodes = {n.name: n for n in m.graph.node}
        a = self.settings.alpha
        done: list[str] = []
        muls: dict[tuple[str, ...], Any] = {}
        folded = inserted = unfoldable = 0
        for site in sites:
            x = amax.get(site.tensor)
            if x is None or x.shape[0] != site.rows:
                continue
            med = float(np.median(x))
            if med <= 0 or float(x.max()) / med < self.settings.outlier_ratio:
                continue
            ws = [_weight_rows(g, nodes[c]) for c in site.consumers]
            wmax = np.max([np.abs(w).max(1) for w in ws if w is not None], axis=0)
            ok = (x > 0) & (wmax > 0)
            s = np.where(ok, np.power(np.where(ok, x, 1), a)
                         / np.power(np.where(ok, wmax, 1), 1 - a), 1.0)
            s = np.clip(s, 1 / self.settings.max_scale, self.settings.max_scale)
            prod = g.producer.get(site.tensor)
            foldable = (prod is not None and prod.op_type == "LayerNormalization"
                        and int(attr(prod, "axis", -1)) == -1 and len(prod.output) == 1
                        and all(g.private_const(i) for i in prod.input[1:3] if i))
            if not foldable and not self.settings.insert_mul:
                unfoldable += 1
                continue
            for c in site.consumers:
                n = nodes[c]
                w = g.const(n.input[1])
                assert w is not None
                transposed = n.op_type == "Gemm" and int(attr(n, "transB", 0))
                g.set_const(n.input[1], w * (s[None, :] if transposed else s[:, None]))
            if foldable:
                assert prod is not None
                for i in prod.input[1:3]:
                    if i:
                        v = g.const(i)
                        assert v is not None
                        g.set_const(i, v / s)
                folded += 1
            else:
                inv, mid = f"{site.tensor}__sq_inv", f"{site.tensor}__sq_smoothed"
                m.graph.initializer.append(numpy_helper.from_array(
                    (1.0 / s).astype(np.float32), inv))
                mul = helper.make_node("Mul", [site.tensor, inv], [mid],
                                       name=f"{site.tensor}__sq_mul")
                for c in site.consumers:
                    nodes[c].input[0] = mid
                muls[site.consumers] = mul
                self.float_nodes[mul.name] = ("smoothquant: divides an outlier activation per "
                                              "channel; its input must not be quantised")
                inserted += 1
            done.append(site.tensor)
        if muls:
            _insert_before_first_consumer(m, muls)
        return m, PassOutcome(
            self.name, "applied" if done else "skipped",
            f"{len(done)} of {len(sites)} MatMul/Gemm input(s) had outlier channels and were "
            f"smoothed (alpha {a}; {folded} folded into LayerNorm, {inserted} via a float Mul)"
            if done else f"none of {len(sites)} MatMul/Gemm input(s) has outlier channels "
                         f"(max/median channel < {self.settings.outlier_ratio})"
            + (f" that a LayerNormalization produces ({unfoldable} with outliers have no "
               "producer to fold into)" if unfoldable else ""),
            {"sites": len(sites), "smoothed": sorted(done), "alpha": a,
             "outliers_without_foldable_producer": unfoldable})


def _insert_before_first_consumer(model: Any, muls: dict[tuple[str, ...], Any]) -> None:
    """Place each new Mul right before the first of its consumers (keeps the order valid)."""
    first = {}
    names = [n.name for n in model.graph.node]
    for cons, mul in muls.items():
        first[min(cons, key=names.index)] = mul
    ordered: list[Any] = []
    for n in model.graph.node:
        if n.name in first:
            ordered.append(first[n.name])
        ordered.append(n)
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered, strict=True):
        c.CopyFrom(n)
    del model.graph.node[:]
    model.graph.node.extend(copies)
