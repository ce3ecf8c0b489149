"""Recognise decomposed activations in the ONNX graph and replace them with one fused op.

Exporters write HardSwish as ``x * HardSigmoid(x)`` or ``x * Clip(x + 3, 0, 6) / 6`` and GELU as
``x * 0.5 * (1 + Erf(x / sqrt(2)))`` in several operand orders. LiteRT has one builtin for each
(HARD_SWISH, GELU) that runs faster than the chain of MUL/ADD/MAXIMUM/MINIMUM it replaces, and
TFLite has no ERF at all. Patterns are matched on graph structure and constant values only,
never on node names; every intermediate tensor must be read by the pattern alone (and not be a
graph output), so a value the model uses elsewhere is never lost. Pure: nodes in, nodes out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import onnx
from onnx import helper

__all__ = ["FUSIONS", "fuse"]

FUSIONS = ("hard_swish", "gelu")
_TOL = 1e-4


class _View:
    """Producer/consumer lookups over a node list and its constants."""

    def __init__(self, nodes: list[onnx.NodeProto], consts: Mapping[str, np.ndarray],
                 outputs: set[str]) -> None:
        self.consts = consts
        self.outputs = outputs
        self.prod = {o: n for n in nodes for o in n.output if o}
        self.uses: dict[str, int] = {}
        for n in nodes:
            for i in n.input:
                self.uses[i] = self.uses.get(i, 0) + 1

    def node(self, name: str, op: str) -> onnx.NodeProto | None:
        n = self.prod.get(name)
        return n if n is not None and n.op_type == op and n.domain in ("", "ai.onnx") else None

    def private(self, name: str) -> bool:
        """Read by exactly one node and not a graph output: safe to fold away."""
        return self.uses.get(name, 0) == 1 and name not in self.outputs

    def scalar(self, name: str) -> float | None:
        c = self.consts.get(name)
        if c is None or c.size != 1 or c.dtype.kind != "f":
            return None
        return float(np.asarray(c).ravel()[0])

    def is_value(self, name: str, v: float) -> bool:
        s = self.scalar(name)
        return s is not None and abs(s - v) <= _TOL * max(1.0, abs(v))

    def other(self, n: onnx.NodeProto, name: str) -> str | None:
        """The other input of a binary node that reads ``name``."""
        if len(n.input) != 2:
            return None
        if n.input[0] == name:
            return str(n.input[1])
        if n.input[1] == name:
            return str(n.input[0])
        return None

    def scaled_by(self, name: str, k: float) -> str | None:
        """``x`` when ``name`` is ``x * k`` or ``x / (1/k)``, with a constant scalar factor."""
        m = self.node(name, "Mul")
        if m is not None:
            for i, j in ((0, 1), (1, 0)):
                if self.is_value(m.input[j], k) and m.input[i] not in self.consts:
                    return str(m.input[i])
        d = self.node(name, "Div")
        if d is not None and self.is_value(d.input[1], 1.0 / k) and d.input[0] not in self.consts:
            return str(d.input[0])
        return None


def _clip_bounds(v: _View, n: onnx.NodeProto) -> tuple[float | None, float | None]:
    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    lo = v.scalar(n.input[1]) if len(n.input) > 1 and n.input[1] else attrs.get("min")
    hi = v.scalar(n.input[2]) if len(n.input) > 2 and n.input[2] else attrs.get("max")
    return (None if lo is None else float(lo)), (None if hi is None else float(hi))


def _relu6_of_x_plus_3(v: _View, name: str) -> str | None:
    """``x`` when ``name`` is ``Clip(x + 3, 0, 6)``."""
    c = v.node(name, "Clip")
    if c is None or _clip_bounds(v, c) != (0.0, 6.0) or not v.private(c.input[0]):
        return None
    a = v.node(c.input[0], "Add")
    if a is None:
        return None
    for i, j in ((0, 1), (1, 0)):
        if v.is_value(a.input[j], 3.0) and a.input[i] not in v.consts:
            return str(a.input[i])
    return None


def _hard_sigmoid_of(v: _View, name: str) -> str | None:
    """``x`` when ``name`` is HardSigmoid(x) with HardSwish's slope 1/6 and offset 1/2."""
    hs = v.node(name, "HardSigmoid")
    if hs is not None:
        attrs = {a.name: helper.get_attribute_value(a) for a in hs.attribute}
        if abs(float(attrs.get("alpha", 0.2)) - 1 / 6) <= _TOL and \
                abs(float(attrs.get("beta", 0.5)) - 0.5) <= _TOL:
            return str(hs.input[0])
        return None
    inner = v.scaled_by(name, 1 / 6)             # Clip(x + 3, 0, 6) / 6
    if inner is not None and v.private(inner):
        return _relu6_of_x_plus_3(v, inner)
    return None


def _match_hard_swish(v: _View, n: onnx.NodeProto) -> str | None:
    """``x`` when node ``n`` computes x * relu6(x + 3) / 6 in any of the exporters' forms."""
    if n.op_type == "Mul" and len(n.input) == 2:
        for i, j in ((0, 1), (1, 0)):
            if v.private(n.input[j]) and _hard_sigmoid_of(v, n.input[j]) == n.input[i]:
                return str(n.input[i])
    if n.op_type in ("Mul", "Div"):              # (x * Clip(x + 3, 0, 6)) / 6
        inner: str | None = None
        if n.op_type == "Div" and v.is_value(n.input[1], 6.0):
            inner = n.input[0]
        elif n.op_type == "Mul":
            for i, j in ((0, 1), (1, 0)):
                if v.is_value(n.input[j], 1 / 6):
                    inner = n.input[i]
        m = v.node(inner, "Mul") if inner and v.private(inner) else None
        if m is not None:
            for i, j in ((0, 1), (1, 0)):
                if v.private(m.input[j]) and _relu6_of_x_plus_3(v, m.input[j]) == m.input[i]:
                    return str(m.input[i])
    return None


def _match_gelu(v: _View, n: onnx.NodeProto) -> str | None:
    """``x`` when node ``n`` is the last Mul of x * 0.5 * (1 + Erf(x / sqrt 2)), any order."""
    if n.op_type != "Mul" or len(n.input) != 2:
        return None

    def one_plus_erf(name: str) -> str | None:        # x from 1 + Erf(x / sqrt(2))
        a = v.node(name, "Add")
        if a is None or not v.private(name):
            return None
        for i, j in ((0, 1), (1, 0)):
            e = v.node(a.input[i], "Erf")
            if e is not None and v.is_value(a.input[j], 1.0) and v.private(a.input[i]) \
                    and v.private(e.input[0]):
                return v.scaled_by(e.input[0], 1 / np.sqrt(2.0))
        return None

    def half_x(name: str) -> str | None:               # x from x * 0.5
        return v.scaled_by(name, 0.5) if v.private(name) else None

    for i, j in ((0, 1), (1, 0)):
        p, q = n.input[i], n.input[j]
        x = one_plus_erf(p)
        if x is not None and (half_x(q) == x):                     # (x*0.5) * (1+erf)
            return x
        if v.is_value(q, 0.5):                                      # (x * (1+erf)) * 0.5
            m = v.node(p, "Mul") if v.private(p) else None
            if m is not None:
                for k, j2 in ((0, 1), (1, 0)):
                    x = one_plus_erf(m.input[k])
                    if x is not None and m.input[j2] == x:
                        return x
        m = v.node(p, "Mul") if v.private(p) else None             # x * ((1+erf) * 0.5)
        if m is not None and q not in v.consts:
            for k, j2 in ((0, 1), (1, 0)):
                x = one_plus_erf(m.input[k])
                if x is not None and v.is_value(m.input[j2], 0.5) and q == x:
                    return x
    return None


_MATCHERS: dict[str, tuple[str, Callable[[_View, onnx.NodeProto], str | None]]] = {
    "hard_swish": ("HardSwish", _match_hard_swish),
    "gelu": ("Gelu", _match_gelu),
}


def fuse(nodes: list[onnx.NodeProto], consts: Mapping[str, np.ndarray], outputs: set[str],
         enabled: tuple[str, ...] = FUSIONS) -> tuple[list[onnx.NodeProto], dict[str, int]]:
    """Nodes with each matched pattern replaced by one node; counts per fusion."""
    counts = dict.fromkeys(enabled, 0)
    for kind in enabled:
        op_type, match = _MATCHERS[kind]
        v = _View(nodes, consts, outputs)
        out: list[onnx.NodeProto] = []
        for n in nodes:
            x = match(v, n)
            if x is None:
                out.append(n)
                continue
            out.append(helper.make_node(op_type, [x], [n.output[0]], name=n.name))
            counts[kind] += 1
        nodes = _drop_dead(out, outputs)
    return nodes, counts


def _drop_dead(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """Remove nodes none of whose outputs is read (the replaced patterns' insides)."""
    while True:
        read = set(outputs) | {i for n in nodes for i in n.input}
        keep = [n for n in nodes if any(o in read for o in n.output if o)]
        if len(keep) == len(nodes):
            return keep
        nodes = keep
