"""Cross-layer equalisation (Nagel et al., "Data-Free Quantization", ICCV 2019).

For two convolutions in a row, ``Conv1 -> [act] -> Conv2``, output channel ``c`` of Conv1 can
be divided by ``s_c > 0`` and input channel ``c`` of Conv2 multiplied by it without changing the
function, as long as ``act`` is positive-homogeneous (``act(x / s) = act(x) / s``): none,
Relu, LeakyRelu, PRelu with one shared slope. Choosing ``s_c = sqrt(r1_c / r2_c)`` (``r`` the
channel's weight range) gives both layers the same per-channel range, so no channel of either
layer wastes the 8-bit grid on another channel's range. Depthwise and grouped convolutions
pair by channel the same way, which is where MobileNet-style nets gain most.

Not equalised, and counted in the report: pairs through Clip (ReLU6), HardSwish,
HardSigmoid or any other activation that is not positive-homogeneous (scaling would move the
clipping point; the function would change), convolutions whose output has other consumers or
is a graph output, and weights shared by several nodes. Pairs are found from the graph alone.
Exact in FP32 up to rounding (tests: max abs diff ~1e-5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from converters.quant._graph import Graph, attr
from converters.quant.base import PassOutcome, setting

__all__ = ["CrossLayerEqualisation", "EqualisationSettings", "equalisable_pairs"]

HOMOGENEOUS = ("Relu", "LeakyRelu")
NOT_HOMOGENEOUS = ("Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Elu", "Selu",
                   "Softplus", "Mish", "Gelu", "Swish")


@dataclass(frozen=True)
class EqualisationSettings:
    iterations: int = setting(8, "rounds over all pairs (chains of pairs converge over rounds)")
    max_scale: float = setting(1e3, "per-channel scale is clamped to [1/max_scale, max_scale]")


@dataclass(frozen=True)
class Pair:
    conv1: str
    act: str | None
    conv2: str


def _conv_ok(g: Graph, n: Any) -> bool:
    return (n.op_type == "Conv" and len(n.input) >= 2 and g.private_const(n.input[1])
            and (len(n.input) < 3 or not n.input[2] or g.private_const(n.input[2])))


def equalisable_pairs(model: Any) -> tuple[list[Pair], dict[str, int]]:
    """Conv pairs that can be equalised exactly, and counts of those that cannot, by reason."""
    g = Graph(model)
    pairs: list[Pair] = []
    skipped: dict[str, int] = {}
    for n in model.graph.node:
        if not _conv_ok(g, n):
            continue
        nxt = g.sole_consumer(n.output[0])
        act = None
        if nxt is not None and nxt.op_type in HOMOGENEOUS:
            act = nxt
            nxt = g.sole_consumer(nxt.output[0])
        elif nxt is not None and nxt.op_type in NOT_HOMOGENEOUS:
            after = g.sole_consumer(nxt.output[0])
            if after is not None and after.op_type == "Conv":
                key = f"through {nxt.op_type} (not positive-homogeneous)"
                skipped[key] = skipped.get(key, 0) + 1
            continue
        if nxt is None or nxt.op_type != "Conv" or nxt.input[0] != (act or n).output[0]:
            continue
        if not _conv_ok(g, nxt):
            skipped["shared or non-constant weights"] = skipped.get(
                "shared or non-constant weights", 0) + 1
            continue
        w1, w2 = g.const(n.input[1]), g.const(nxt.input[1])
        if w1 is None or w2 is None or w2.shape[1] * int(attr(nxt, "group", 1)) != w1.shape[0]:
            continue
        pairs.append(Pair(n.name, act.name if act is not None else None, nxt.name))
    return pairs, skipped


def _in_channel_view(w2: np.ndarray, groups: int, channels: int
                     ) -> list[tuple[slice, int]]:
    """Index (rows, col) into Conv2's weight for each of its input channels."""
    cpg = channels // groups
    opg = w2.shape[0] // groups
    return [np.s_[(c // cpg) * opg:(c // cpg + 1) * opg, c % cpg] for c in range(channels)]


class CrossLayerEqualisation:
    name = "cross_layer_equalisation"

    def __init__(self, settings: EqualisationSettings | None = None) -> None:
        self.settings = settings or EqualisationSettings()

    def applies(self, model: Any) -> str | None:
        pairs, skipped = equalisable_pairs(model)
        if pairs:
            return None
        why = ", ".join(f"{v} {k}" for k, v in sorted(skipped.items()))
        return "no Conv -> (none|Relu|LeakyRelu) -> Conv pair" + (f" ({why} skipped)"
                                                                   if why else "")

    def run(self, model: Any) -> tuple[Any, PassOutcome]:
        import onnx

        m = onnx.ModelProto()
        m.CopyFrom(model)
        pairs, skipped = equalisable_pairs(m)
        g = Graph(m)
        nodes = {n.name: n for n in m.graph.node}
        before = after = 0.0
        for it in range(self.settings.iterations):
            for p in pairs:
                c1, c2 = nodes[p.conv1], nodes[p.conv2]
                w1 = g.const(c1.input[1])
                w2 = g.const(c2.input[1])
                assert w1 is not None and w2 is not None
                w1 = w1.astype(np.float64)
                w2 = w2.astype(np.float64)
                views = _in_channel_view(w2, int(attr(c2, "group", 1)), w1.shape[0])
                r1 = np.abs(w1.reshape(w1.shape[0], -1)).max(1)
                r2 = np.array([np.abs(w2[v]).max() for v in views])
                if it == 0:
                    before += float(np.mean(r1 / r1.max()) + np.mean(r2 / r2.max())) / 2
                ok = (r1 > 0) & (r2 > 0)
                s = np.where(ok, np.sqrt(np.where(ok, r1, 1) / np.where(ok, r2, 1)), 1.0)
                s = np.clip(s, 1 / self.settings.max_scale, self.settings.max_scale)
                w1 /= s.reshape(-1, *[1] * (w1.ndim - 1))
                for c, v in enumerate(views):
                    w2[v] *= s[c]
                g.set_const(c1.input[1], w1)
                g.set_const(c2.input[1], w2)
                if len(c1.input) > 2 and c1.input[2]:
                    b1 = g.const(c1.input[2])
                    assert b1 is not None
                    g.set_const(c1.input[2], b1.astype(np.float64) / s)
        for p in pairs:
            c1, c2 = nodes[p.conv1], nodes[p.conv2]
            w1 = g.const(c1.input[1])
            w2 = g.const(c2.input[1])
            assert w1 is not None and w2 is not None
            views = _in_channel_view(w2, int(attr(c2, "group", 1)), w1.shape[0])
            r1 = np.abs(w1.reshape(w1.shape[0], -1)).max(1)
            r2 = np.array([np.abs(w2[v]).max() for v in views])
            after += float(np.mean(r1 / r1.max()) + np.mean(r2 / r2.max())) / 2
        n = max(1, len(pairs))
        return m, PassOutcome(
            self.name, "applied",
            f"{len(pairs)} conv pair(s) equalised; mean channel range / layer range "
            f"{before / n:.2f} -> {after / n:.2f}",
            {"pairs": len(pairs), "skipped": dict(sorted(skipped.items())),
             "mean_relative_channel_range": {"before": round(before / n, 4),
                                             "after": round(after / n, 4)}})
