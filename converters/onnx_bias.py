"""Gemm biases in the one shape ONNX Runtime's QDQ quantiser handles per channel: a vector.

ORT's quantiser (1.32), quantising a Gemm's weights per channel with symmetric int8, widens
any weight scale whose int32 bias would overflow, channel by channel, reading the bias as
``bias[i]`` (``qdq_quantizer._adjust_weight_scale_for_int32_bias``). Gemm's ``C`` only has to
*broadcast* to ``[M, N]``, and graphs carry it in other shapes: ``[1, N]`` (what ORT's own
MatMul + Add fusion leaves when the Add's constant was ``[1, N]``, as Keras/JAX exporters write
a dense layer's bias), ``[1]`` or a scalar. Then ``bias[i]`` is a whole row, or out of range,
and the quantiser crashes ("The truth value of an array with more than one element is
ambiguous", ``IndexError``) while the stock per-tensor quantiser, which takes the bias' min and
max, does not.

:func:`vector_gemm_biases` rewrites every constant Gemm bias exactly: one that varies only
along N (``[1, N]``, ``[1, 1]``, ``[1]``, scalar: every leading dimension 1) becomes its
``[N]`` vector, which broadcasts to the same ``[M, N]``; one that varies along M (``[M, N]``,
``[M, 1]`` with ``M > 1``) has no per-channel form, so it moves out of the Gemm into an
``Add`` after it (``beta`` folded in), and the Gemm keeps no bias. Pure on ``onnx.ModelProto``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from converters.onnx_utils import replace_nodes

__all__ = ["vector_gemm_biases"]


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _columns(node: Any, weights: Any) -> int | None:
    """N of a Gemm whose B is a constant 2-D matrix."""
    if weights is None or len(weights.dims) != 2:
        return None
    return int(weights.dims[0] if _attr(node, "transB", 0) else weights.dims[1])


def vector_gemm_biases(model: Any) -> tuple[Any, dict[str, str]]:
    """``model`` with each constant Gemm bias as an ``[N]`` vector or a separate Add.

    Returns the new model (a copy; ``model`` is untouched) and ``{gemm node: what was done}``;
    an empty dict when every bias already was a vector (the copy is then equal to ``model``).
    Gemms whose B is not a constant 2-D matrix, or whose C is not a constant, are left alone:
    the quantiser does not quantise their bias per channel.
    """
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name: i for i in m.graph.initializer}
    uses: dict[str, int] = {}
    for n in m.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    done: dict[str, str] = {}
    nodes: list[Any] = []
    for n in m.graph.node:
        nodes.append(n)
        if n.op_type != "Gemm" or len(n.input) < 3 or n.input[2] not in inits:
            continue
        cols = _columns(n, inits.get(n.input[1]))
        c = inits[n.input[2]]
        if cols is None or list(c.dims) == [cols]:
            continue
        bias = numpy_helper.to_array(c)
        dims = list(bias.shape)
        leading = dims[:-1] if dims else []
        if all(d == 1 for d in leading) and (not dims or dims[-1] in (1, cols)):
            vector = np.ascontiguousarray(np.broadcast_to(bias.reshape(-1), (cols,)))
            name = n.input[2] if uses[n.input[2]] == 1 else f"{n.name}_bias_vector"
            inits[name] = _replace(m, inits, name, numpy_helper.from_array(vector, name))
            n.input[2] = name
            done[n.name] = f"bias {dims} as its [{cols}] vector (same broadcast)"
            continue
        beta = float(_attr(n, "beta", 1.0))
        moved = f"{n.name}_bias_rows"
        product = f"{n.output[0]}_before_bias"
        inits[moved] = _replace(m, inits, moved, numpy_helper.from_array(
            (bias * np.asarray(beta, bias.dtype)).astype(bias.dtype), moved))
        out = n.output[0]
        del n.input[2]
        n.output[0] = product
        for a in list(n.attribute):
            if a.name == "beta":
                n.attribute.remove(a)
        nodes.append(helper.make_node("Add", [product, moved], [out], name=f"{n.name}_bias"))
        done[n.name] = (f"bias {dims} varies along rows: moved into an Add after the Gemm "
                        "(no per-channel form)")
    if done:
        replace_nodes(m, nodes)
    return m, done


def _replace(model: Any, inits: dict[str, Any], name: str, tensor: Any) -> Any:
    """Put ``tensor`` in the graph as initializer ``name`` (replacing one of that name)."""
    old = inits.get(name)
    if old is not None:
        old.CopyFrom(tensor)
        return old
    model.graph.initializer.append(tensor)
    return model.graph.initializer[-1]
