"""One layer of a QDQ model back in float, by editing the graph (pure, no re-quantisation).

Measuring what each layer costs on the task metric needs one model per layer with only that
layer out of INT8. Re-running ``quantize_static`` per layer is what made the accuracy loop slow
(a refused ocr-rec build spent 51 of 86 s there). In a QDQ graph every node already computes in
float between its DequantizeLinear inputs and the QuantizeLinear of its output, so lifting a
layer is an edit of its inputs only:

* an activation input read through ``Q -> DQ`` (or ``Q -> Clip -> DQ``, a 7-bit activation)
  reads the float tensor the ``Q`` quantised. Where the quantiser removed a Relu or Clip and
  left the ``Q``'s saturation to do its work (ORT renames the producer's output to the
  activation's, so that tensor is the *pre-activation* value, negatives included), the
  activation is applied again on the lifted path: reading the tensor bare fed a lifted layer
  values its float model never sees (on a DBNet, lifting the 17 layers of the eight worst
  tensors took mask IoU from 7.8 % down to 38 % down);
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
# activations ORT's QDQ quantiser removes, leaving the Q's clamp to do their work
_REMOVABLE = ("Relu", "Clip")


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
    removed = _removed_activations(g, float_model)
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
                # the float activation Q quantised, with any activation the quantiser removed
                value = _float_value(g, float_model, q.input[0], removed, have)
                if value is not None:
                    node.input[k] = value
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


def _removed_activations(g: Any, float_model: Any) -> dict[str, Any]:
    """Float-model Relu/Clip nodes the quantiser removed, by the tensor that now stands for
    their output in ``g`` (written by their producer instead)."""
    present = {n.name for n in g.node}
    written = {o for n in g.node for o in n.output}
    return {n.output[0]: n for n in float_model.graph.node
            if n.op_type in _REMOVABLE and n.name not in present and n.output
            and n.output[0] in written}


def _float_value(g: Any, float_model: Any, tensor: str, removed: dict[str, Any],
                 have: set[str]) -> str | None:
    """``tensor`` as the float model computes it: itself, or, where the quantiser folded a
    Relu/Clip into the Q's saturation, a copy of that activation applied to it; None when
    that copy cannot be made (bounds that are not constants): the input stays dequantised."""
    import onnx

    act = removed.get(tensor)
    if act is None:
        return tensor
    out = f"{tensor}_float"
    if any(out in n.output for n in g.node):
        return out
    src_inits = {i.name: i for i in float_model.graph.initializer}
    if any(e and e not in have and e not in src_inits for e in act.input[1:]):
        return None
    for extra in act.input[1:]:             # Clip's min and max
        if extra and extra not in have:
            init = onnx.TensorProto()
            init.CopyFrom(src_inits[extra])
            g.initializer.append(init)
            have.add(extra)
    copy = onnx.NodeProto()
    copy.CopyFrom(act)
    copy.name = f"{act.name}_float"
    copy.input[0] = tensor
    del copy.output[:]
    copy.output.append(out)
    at = next(i for i, n in enumerate(g.node) if tensor in n.output)
    g.node.insert(at + 1, copy)
    return out


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
