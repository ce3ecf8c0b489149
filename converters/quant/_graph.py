"""Small graph queries the passes share (pure, on onnx.ModelProto)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Graph"]


class Graph:
    """Producer/consumer maps and initialiser access for one model (mutates its initialisers)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        g = model.graph
        self.inits = {i.name: i for i in g.initializer}
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in g.output}
        self.uses: dict[str, int] = {}
        for n in g.node:
            for i in n.input:
                self.uses[i] = self.uses.get(i, 0) + 1

    def const(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        t = self.inits.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def set_const(self, name: str, value: np.ndarray) -> None:
        from onnx import numpy_helper

        t = self.inits[name]
        t.CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(t).dtype), name))

    def private_const(self, name: str) -> bool:
        """A float initialiser used by exactly one node input (safe to rewrite in place)."""
        t = self.inits.get(name)
        return t is not None and self.uses.get(name, 0) == 1 and t.data_type == 1

    def sole_consumer(self, tensor: str) -> Any | None:
        cs = self.consumers.get(tensor, [])
        return cs[0] if len(cs) == 1 and tensor not in self.outputs else None


def attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default



def privatise_params(model: Any) -> int:
    """Give each Conv/Gemm/MatMul its own copy of a weight or bias shared with others.

    ORT's optimiser merges identical initialisers (all-zero biases of two layers become one),
    and passes rescale parameters per layer. Only initialisers whose every use is a parameter
    slot of these ops are copied; returns how many copies were made.
    """
    from onnx import TensorProto

    inits = {i.name: i for i in model.graph.initializer}
    users: dict[str, list[tuple[Any, int]]] = {}
    for n in model.graph.node:
        for k, i in enumerate(n.input):
            if i in inits:
                users.setdefault(i, []).append((n, k))
    made = 0
    for name, uses in sorted(users.items()):
        if len(uses) < 2 or not all(n.op_type in ("Conv", "Gemm", "MatMul") and k >= 1
                                    for n, k in uses):
            continue
        for n, k in uses[1:]:
            copy = TensorProto()
            copy.CopyFrom(inits[name])
            copy.name = f"{name}__{n.name}"
            model.graph.initializer.append(copy)
            n.input[k] = copy.name
            made += 1
    return made
