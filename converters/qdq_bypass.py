"""One layer of a QDQ model back in float, by editing the graph (pure, no re-quantisation).

Measuring what each layer costs on the task metric needs one model per layer with only that
layer out of INT8. Re-running ``quantize_static`` per layer is what made the accuracy loop slow
(a refused ocr-rec build spent 51 of 86 s there). In a QDQ graph every node already computes in
float between its DequantizeLinear inputs and the QuantizeLinear of its output, so lifting a
layer is an edit of its inputs only:

* an activation input read through ``Q -> DQ`` (or ``Q -> Clip -> DQ``, a 7-bit activation)
  reads the float tensor the ``Q`` quantised;
* a weight or bias read through ``DQ(initializer)`` reads the float initializer the quantiser
  started from (taken from the model that was quantised, node by node and input by input, so
  graph passes that rewrote weights, such as equalisation, stay consistent).

Its output keeps its Q/DQ when other quantised layers read it, as ``quantize_static`` with the
layer excluded does. Every other node is left exactly as it was, so outputs that do not depend
on the layer are unchanged; DequantizeLinear nodes no one reads any more are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["bypass_layers"]

_ON_QUANTISED = ("Clip", "Identity")


def bypass_layers(qdq: Any, float_model: Any, nodes: Iterable[str]) -> Any:
    """A copy of ``qdq`` (ModelProto) with ``nodes`` computing on float inputs and weights.

    ``float_model`` is the model that was quantised (same node names and inputs). A node that
    is not in both graphs is a ValueError: the caller asked to lift something that is not there.
    """
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(qdq)
    g = m.graph
    by_name = {n.name: n for n in g.node}
    src_nodes = {n.name: n for n in float_model.graph.node}
    src_inits = {i.name: i for i in float_model.graph.initializer}
    producer = {o: n for n in g.node for o in n.output}
    have = {i.name for i in g.initializer}
    for name in sorted(set(nodes)):
        node, src = by_name.get(name), src_nodes.get(name)
        if node is None or src is None or node.op_type != src.op_type:
            raise ValueError(f"layer '{name}' is not a node of both the QDQ and the float model")
        for k, tensor in enumerate(node.input):
            dq = producer.get(tensor)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            # a uint8 Clip between Q and DQ (7-bit activations, converters/x86_split) or an
            # Identity leaves the tensor a quantised copy of the same float tensor
            while q is not None and q.op_type in _ON_QUANTISED and q.input:
                q = producer.get(q.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[k] = q.input[0]              # the float activation Q quantised
                continue
            original = src.input[k] if k < len(src.input) else ""
            if original in src_inits:                   # a quantised weight or bias
                # ORT names a bias's DequantizeLinear output after the float bias itself.
                name = original if original not in producer else f"{original}_float"
                if name not in have:
                    init = onnx.TensorProto()
                    init.CopyFrom(src_inits[original])
                    init.name = name
                    g.initializer.append(init)
                    have.add(name)
                node.input[k] = name
    _drop_unread(g)
    return m


def _drop_unread(g: Any) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads, and the initializers only they read."""
    outputs = {o.name for o in g.output}
    freed: set[str] = set()
    while True:
        read = _read(g) | outputs
        dead = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            freed.update(n.input)
            g.node.remove(n)
    read = _read(g) | outputs
    for init in [i for i in g.initializer if i.name in freed and i.name not in read]:
        g.initializer.remove(init)


def _read(g: Any) -> set[str]:
    """Every tensor name a node of ``g`` reads, subgraphs (outer-scope reads) included."""
    names: set[str] = set()
    for n in g.node:
        names.update(n.input)
        for a in n.attribute:
            for sub in (*([a.g] if a.HasField("g") else []), *a.graphs):
                names |= _read(sub)
    return names
