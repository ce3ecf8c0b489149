"""Proof that an INT8 artifact cannot saturate ONNX Runtime's u8s8 kernels on x86 without VNNI.

Why a module of its own: on AVX2 and AVX-512 without VNNI, MLAS multiplies u8 activations by
s8 weights on ``vpmaddubsw``, which adds each *pair* of products into a saturating int16. A
pair saturates when ``a0*w0 + a1*w1`` leaves [-32768, 32767], and the output is then wrong
without any error. Raw u8 values count, not ``a - zero_point`` (MLAS subtracts zero points
afterwards, from row and column sums), so the bound that matters is the largest raw u8 value
the kernel can be fed and the largest |w_q| it multiplies:

* 7-bit weights, 8-bit activations: 2*255*64 = 32640, exact;
* 8-bit weights, 7-bit activations: 2*127*127 = 32258, exact, *if* the u8 tensor can never
  exceed 127. A QuantizeLinear saturates at 255 whatever its scale, so an activation whose
  calibrated range maps onto 0..127 reaches 128..255 at run time for inputs beyond that range.
  Only a bound in the graph makes it 7-bit: a uint8 ``Clip`` to at most 127 (what
  :mod:`converters.x86_split` inserts), or a constant tensor.

:func:`u8s8_products` reads that bound for every Conv/MatMul/Gemm fed by DequantizeLinear
(and the already-integer QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger), from the graph
alone; :func:`saturation_violations` keeps the pairs that could saturate. Pure: a ModelProto in,
facts out. It is conservative in that any two products of a layer are assumed to be paired;
the one exception is a depthwise convolution, whose MLAS kernels never pair products
(:func:`is_depthwise`, with the kernels that show it), so 8-bit weights on 8-bit activations
are exact there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["INT16_MAX", "U8S8Product", "exactness_summary", "is_depthwise",
           "saturation_violations", "u8s8_products"]

INT16_MAX = 32767
INT16_MIN = -32768
_U8_MAX = 255
# op type -> (activation input, weight input) of the products the kernel forms
_FLOAT_COMPUTE = {"Conv": (0, 1), "MatMul": (0, 1), "Gemm": (0, 1)}
_INTEGER_COMPUTE = {"QLinearConv": (0, 3), "QLinearMatMul": (0, 3), "ConvInteger": (0, 1),
                    "MatMulInteger": (0, 1)}
_UINT8, _INT8 = 2, 3      # onnx.TensorProto data types


@dataclass(frozen=True)
class U8S8Product:
    """One layer that multiplies u8 activations by s8 weights, with the bounds the graph proves.

    ``activation_max`` is the largest raw u8 value the kernel can be fed (255 unless bounded);
    ``weight_max``/``weight_min`` the extreme int8 weights (±128 when not constant).
    """

    node: str
    op_type: str
    activation: str
    weight: str
    activation_max: int
    weight_max: int
    weight_min: int
    bound_by: str
    products_per_int16: int = 2   # 1: a depthwise convolution (each product alone, see below)

    @property
    def worst_pair(self) -> tuple[int, int]:
        """The most negative and most positive int16 sum of products the kernel can form."""
        n = self.products_per_int16
        return (n * self.activation_max * min(self.weight_min, 0),
                n * self.activation_max * max(self.weight_max, 0))

    @property
    def exact(self) -> bool:
        lo, hi = self.worst_pair
        return lo >= INT16_MIN and hi <= INT16_MAX

    def describe(self) -> str:
        lo, hi = self.worst_pair
        return (f"{self.op_type} '{self.node}': activation '{self.activation}' reaches "
                f"{self.activation_max} ({self.bound_by}) and weights span "
                f"[{self.weight_min}, {self.weight_max}]: a pair of products reaches "
                f"{lo if lo < INT16_MIN else hi}, beyond int16")


def _int_initializers(graph: Any) -> dict[str, Any]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in graph.initializer
            if i.data_type in (_UINT8, _INT8)}


def _scalar_inits(graph: Any) -> dict[str, float]:
    from onnx import numpy_helper

    out = {}
    for i in graph.initializer:
        arr = numpy_helper.to_array(i)
        if arr.size == 1:
            out[i.name] = float(arr.ravel()[0])
    return out


def _elem_types(graph: Any) -> dict[str, int]:
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*graph.input, *graph.output, *graph.value_info]}
    types.update({i.name: i.data_type for i in graph.initializer})
    for n in graph.node:        # a QuantizeLinear's output has its zero point's type
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in types:
            types[n.output[0]] = types[n.input[2]]
        elif n.op_type == "Clip" and n.input and n.input[0] in types:
            types[n.output[0]] = types[n.input[0]]
    return types


def _integer_input(tensor: str, producers: Mapping[str, Any], op_type: str) -> str:
    """The integer tensor a compute input reads ("" when it is float: no integer kernel)."""
    if op_type in _INTEGER_COMPUTE:
        return tensor
    dq = producers.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear":
        return ""
    return str(dq.input[0])


def _activation_bound(tensor: str, producers: Mapping[str, Any], ints: Mapping[str, Any],
                      scalars: Mapping[str, float]) -> tuple[int, str]:
    """The largest raw value ``tensor`` (u8) can hold at run time, and what proves it."""
    if tensor in ints:
        return int(ints[tensor].max()), "a constant"
    node = producers.get(tensor)
    if node is not None and node.op_type == "Clip" and len(node.input) > 2 \
            and node.input[2] in scalars:
        upper, why = _activation_bound(node.input[0], producers, ints, scalars)
        clip = int(scalars[node.input[2]])
        if clip < upper:
            return max(clip, 0), f"a uint8 Clip '{node.name}' to {clip}"
        return upper, why
    return _U8_MAX, "uint8 saturates only at 255"


def u8s8_products(model: Any) -> list[U8S8Product]:
    """Every layer of ``model`` whose integer kernel multiplies u8 activations by s8 weights."""
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    ints = _int_initializers(graph)
    scalars = _scalar_inits(graph)
    types = _elem_types(graph)
    out = []
    for n in graph.node:
        slots = _FLOAT_COMPUTE.get(n.op_type) or _INTEGER_COMPUTE.get(n.op_type)
        if slots is None or len(n.input) <= max(slots):
            continue
        a = _integer_input(n.input[slots[0]], producers, n.op_type)
        w = _integer_input(n.input[slots[1]], producers, n.op_type)
        if not a or not w:
            continue
        a_type = ints[a].dtype.name if a in ints else {_UINT8: "uint8", _INT8: "int8"}.get(
            types.get(a, _UINT8), "other")
        w_type = ints[w].dtype.name if w in ints else {_UINT8: "uint8", _INT8: "int8"}.get(
            types.get(w, _INT8), "other")
        if a_type != "uint8" or w_type != "int8":
            continue            # s8s8, u8u8 and 16-bit kernels widen: no int16 pairs
        a_max, why = _activation_bound(a, producers, ints, scalars)
        if w in ints:
            w_max, w_min = int(ints[w].max()), int(ints[w].min())
        else:
            w_max, w_min = 127, -128
        per = 1 if w in ints and is_depthwise(n, ints[w].shape) else 2
        out.append(U8S8Product(n.name, n.op_type, a, w, a_max, w_max, w_min, why, per))
    return out


def is_depthwise(node: Any, weight_shape: tuple[int, ...]) -> bool:
    """A convolution with one input and one output channel per group (MLAS's depthwise path).

    ORT 1.32's QLinearConv sends exactly these to its depthwise kernels (qlinearconv.cc:
    ``group_input_channels == 1 && group_output_channels == 1``), which never add two u8*s8
    products in int16: MlasConvDepthwiseKernelAvx2 widens both operands to int16 and
    multiplies into int32, ConvSymKernelAvx2's depthwise kernel zero-/sign-extends to int32
    before vpmaddwd, and ConvSymKernelAvx512Core's zero-extends each byte into its own dword
    before vpmaddubsw, so each int16 holds one product (|255*-128| < 32768). 8-bit weights on
    8-bit activations are exact there.
    """
    if node.op_type not in ("Conv", "QLinearConv", "ConvInteger") or len(weight_shape) < 3:
        return False
    group = next((int(a.i) for a in node.attribute if a.name == "group"), 1)
    return group > 1 and weight_shape[1] == 1 and weight_shape[0] == group


def saturation_violations(model: Any) -> list[U8S8Product]:
    """The layers whose int16 pairs can saturate on x86 without VNNI (empty: exact there)."""
    return [p for p in u8s8_products(model) if not p.exact]


def exactness_summary(products: list[U8S8Product]) -> dict[str, Any]:
    """What the manifest records: how many u8s8 layers were proved exact, and by which split."""
    def eight(p: U8S8Product) -> bool:
        return p.exact and max(p.weight_max, -p.weight_min) > 64

    return {"u8s8_layers": len(products), "proved_exact": sum(p.exact for p in products),
            "weights_7bit": sum(max(p.weight_max, -p.weight_min) <= 64 for p in products),
            "weights_8bit_depthwise": sum(eight(p) and p.products_per_int16 == 1
                                          for p in products),
            "weights_8bit_activation_7bit": sum(eight(p) and p.products_per_int16 == 2
                                                for p in products),
            "violations": [asdict(p) for p in products if not p.exact]}
