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

* an activation the quantiser dropped in front of a Q (ORT folds a Relu or Clip into the Q's
  range and gives its output name to the tensor before it) is put back for the lifted layer:
  without it every float layer after such a Relu read its input, and "all layers lifted" was
  not the float model (the PP-OCR recogniser's SE blocks read 0.948 argmax agreement so).

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
                # the float activation Q quantised, or what the float model computes from it
                # where the quantiser folded an activation into Q's range
                node.input[k] = _float_reading(g, float_model, q.input[0], src.input[k],
                                               producer, have)
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


_FOLDABLE = ("Relu", "Clip")     # what ORT's QDQ quantiser folds into the Q after it


def _float_reading(g: Any, float_model: Any, quantised: str, wanted: str,
                   producer: dict[str, Any], have: set[str]) -> str:
    """The float tensor a lifted node reads in place of ``Q(quantised)``: ``quantised``
    itself, unless the quantiser dropped a Relu or Clip in front of that Q and let Q's range
    clamp instead (ORT's QDQ quantiser does, giving the dropped node's output name to the
    tensor before it). ``wanted`` is the node's input in the float model: when the float
    model makes it with such nodes that ``g`` no longer has, after the node that made
    ``quantised``, those nodes are copied back (once, under new output names, right after
    that node) and their output is read."""
    import onnx

    kept = {n.name for n in g.node if n.name}
    made = {o: n for n in float_model.graph.node for o in n.output}
    chain: list[Any] = []
    t = wanted
    while (n := made.get(t)) is not None and n.name and n.name not in kept:
        if n.op_type not in _FOLDABLE or len(chain) > 4:
            return quantised
        chain.append(n)
        t = n.input[0]
    source = producer.get(quantised)
    if not chain or n is None or source is None or source.name != n.name:
        return quantised
    inits = {i.name: i for i in float_model.graph.initializer}
    at = list(g.node).index(source) + 1
    t = quantised
    for n in reversed(chain):            # from the quantised tensor forwards
        out = f"{n.output[0]}_bypass_float"
        if out not in producer:
            for name in n.input[1:]:     # Clip's bounds
                if name and name in inits and name not in have:
                    init = onnx.TensorProto()
                    init.CopyFrom(inits[name])
                    g.initializer.append(init)
                    have.add(name)
            copy = onnx.NodeProto()
            copy.CopyFrom(n)
            copy.name = f"{n.name}_bypass_float"
            copy.input[0] = t
            del copy.output[:]
            copy.output.append(out)
            g.node.insert(at, copy)
            at += 1
            producer[out] = copy
        t = out
    return t


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
