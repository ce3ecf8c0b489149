"""Per-layer bit split for exact INT8 on x86 without VNNI: 7-bit weights or 7-bit activations.

Why: on AVX2 / AVX-512 without VNNI a u8*s8 pair of products must fit int16
(:mod:`converters.x86_exact`). Two splits fit: 7-bit weights with 8-bit activations
(2*255*64 = 32640) and 8-bit weights with 7-bit activations (2*127*127 = 32258). The target
used to take the first everywhere, which costs the layers whose error comes from their weights
(measured: ocr-cls -8.3 % top-1, ocr-rec -3.1 % 1-CER). Which split loses less is a property of
each layer, so it is chosen per layer:

* the relative noise power a layer gets from quantising its weights (per output channel, step
  max|w|/127) and from quantising its input activation (step range/255 over the mean square
  of that input, measured in FP32 on calibration samples); halving the levels quadruples the
  step's noise, so the layer is weight-limited (give it 8-bit weights, 7-bit input) when the
  weight term is the larger;
* the choice is made per *input tensor*: once a tensor is 7-bit every convolution reading it
  may take 8-bit weights for free, and every other reader pays for the coarser grid, so the
  tensor goes 7-bit when the sum over its readers says so.

A depthwise convolution needs neither: MLAS never adds two of its products in int16
(:func:`converters.x86_exact.is_depthwise`), so it takes 8-bit weights on its 8-bit input
(``w8a8``) in every policy but the old default. Four candidates (all 7-bit weights; 8-bit
depthwise only; per layer; all 7-bit inputs) are then verified on the task metric by the
caller, which ships the best.

What makes a 7-bit activation 7-bit at run time: its QuantizeLinear gets a scale that maps the
calibrated range onto 0..127 (``TensorQuantOverrides`` ``scale``/``zero_point``: ORT 1.32
refuses ``reduce_range`` for activations), and a uint8 ``Clip`` to 127 after it
(:func:`clamp_seven_bit`), because a QuantizeLinear saturates only at 255 and an input beyond
the calibrated range would otherwise reach 128..255. Clipping there is what an 8-bit activation
does at its calibrated maximum; ORT keeps both convolutions fused (QLinearConv, Clip on uint8,
QLinearConv). 8-bit weights are a per-weight ``reduce_range: False`` override (with the axis
ORT would use, or it quantises the weight per tensor).

Pure apart from :func:`measure`, which runs the FP32 model for the activation statistics.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from converters.x86_exact import is_depthwise

__all__ = ["POLICIES", "BitSplit", "LayerBits", "clamp_seven_bit", "compute_layers",
           "measure", "seven_bit_params", "split_for", "tie_chains"]

Bits = Literal["w7a8", "w8a7", "w8a8"]
# cheapest first: the previous default, then depthwise 8-bit only (no 7-bit input anywhere)
POLICIES = ("w7a8", "depthwise", "per-layer", "w8a7")
STAT_SAMPLES = 8
# noise power of halving the levels: (127/64)^2 for symmetric weights, (255/127)^2 for u8
_W7_PENALTY = (127 / 64) ** 2
_A7_PENALTY = (255 / 127) ** 2
_A7_QMAX = 127
_WEIGHT_OPS = ("Conv", "MatMul", "Gemm")


@dataclass(frozen=True)
class LayerBits:
    """One u8s8 layer: what it reads, the split chosen, and the noise that chose it."""

    node: str
    activation: str
    weight: str
    axis: int                 # the weight's per-channel axis, as ORT would pick it
    bits: Bits = "w7a8"
    depthwise: bool = False   # MLAS never pairs its products: 8-bit weights, 8-bit input exact
    weight_nsr: float = 0.0   # relative noise power from 8-bit weights
    activation_nsr: float = 0.0   # relative noise power from an 8-bit input
    reason: str = ""


@dataclass(frozen=True)
class BitSplit:
    """The split of every layer of one build; what the quantiser and the manifest read."""

    policy: str
    layers: tuple[LayerBits, ...] = ()
    demoted: tuple[str, ...] = field(default=())
    # tensor -> the tensors ORT ties its quantisation to (root first), see tie_chains()
    ties: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def seven_bit_activations(self) -> frozenset[str]:
        return frozenset(lay.activation for lay in self.layers if lay.bits == "w8a7")

    def eight_bit_weights(self) -> frozenset[str]:
        """Weights every reader of which takes 8 bits (a shared weight follows its 7-bit one)."""
        by_weight: dict[str, set[str]] = {}
        for lay in self.layers:
            by_weight.setdefault(lay.weight, set()).add(lay.bits)
        return frozenset(w for w, bits in by_weight.items() if "w7a8" not in bits)

    def eight_bit_nodes(self) -> frozenset[str]:
        eight = self.eight_bit_weights()
        return frozenset(lay.node for lay in self.layers if lay.weight in eight)

    def weight_bits(self, node: str) -> int:
        """7 or 8: the bits of ``node``'s weights in the artifact (for AdaRound's weight grid)."""
        eight = self.eight_bit_weights()
        for lay in self.layers:
            if lay.node == node:
                return 8 if lay.weight in eight else 7
        return 7

    def demote(self, nodes: Iterable[str]) -> BitSplit:
        """The same split with ``nodes`` back on 7-bit weights (their inputs stay as they are)."""
        names = set(nodes)
        return replace(self, layers=tuple(
            replace(lay, bits="w7a8", reason="checker: its input was not proved 7-bit")
            if lay.node in names and lay.bits != "w7a8" else lay for lay in self.layers),
            demoted=tuple(sorted({*self.demoted, *names})))

    def overrides(self, ranges: Mapping[str, tuple[float, float]],
                  base: Mapping[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        """``base`` TensorQuantOverrides plus this split's weight bits and 7-bit scales."""
        out = {k: [dict(d) for d in v] for k, v in base.items()}
        axes = {lay.weight: lay.axis for lay in self.layers}
        for w in sorted(self.eight_bit_weights()):
            out[w] = [{"axis": axes[w], "reduce_range": False}]
        for t, (scale, zp) in sorted(self.activation_params(ranges, base).items()):
            out[t] = [{"scale": np.array(scale, np.float32), "zero_point": np.array(zp, np.uint8)}]
        return out

    def activation_params(self, ranges: Mapping[str, tuple[float, float]],
                          base: Mapping[str, list[dict[str, Any]]] | None = None
                          ) -> dict[str, tuple[float, int]]:
        """(scale, zero point) of each 7-bit activation, from its (shared) calibrated range."""
        out = {}
        chains = dict(self.ties)
        for t in self.seven_bit_activations():
            chain = chains.get(t, (t,))
            given = (base or {}).get(chain[0], [{}])[0]
            lo, hi = ranges.get(chain[0], (np.nan, np.nan))
            params = seven_bit_params(float(given.get("rmin", lo)), float(given.get("rmax", hi)))
            if params is not None:
                out.update(dict.fromkeys(chain, params))
        return out

    def to_dict(self) -> dict[str, Any]:
        eight = self.eight_bit_weights()
        return {"policy": self.policy,
                "layers": {lay.node: {"bits": lay.bits, "weight_bits": 8 if lay.weight in eight
                                      else 7, "input": lay.activation,
                                      "weight_nsr": float(f"{lay.weight_nsr:.4g}"),
                                      "activation_nsr": float(f"{lay.activation_nsr:.4g}"),
                                      **({"reason": lay.reason} if lay.reason else {})}
                           for lay in self.layers},
                "seven_bit_activations": sorted(self.seven_bit_activations()),
                **({"demoted_by_checker": list(self.demoted)} if self.demoted else {})}


def seven_bit_params(rmin: float, rmax: float) -> tuple[float, int] | None:
    """Scale and zero point mapping [rmin, rmax] (0 included, as ORT does) onto 0..127."""
    if not (np.isfinite(rmin) and np.isfinite(rmax)):
        return None
    lo, hi = min(rmin, 0.0), max(rmax, 0.0)
    if hi - lo <= 0:
        return None
    scale = float(np.float32((hi - lo) / _A7_QMAX))
    zp = int(np.clip(round(-lo / scale), 0, _A7_QMAX))
    return scale, zp


def tie_chains(model: Any, tied_ops: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """For each tensor an op of ``tied_ops`` makes, the chain of tensors back to its root.

    ORT quantises the output of such ops (MaxPool, Reshape, Flatten, ...) with its input's
    scale and zero point, so a 7-bit scale asked for the output must be asked for the root.
    """
    ops = set(tied_ops)
    inits = {i.name for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    out: dict[str, tuple[str, ...]] = {}
    for t, n in producers.items():
        chain = [t]
        while n is not None and n.op_type in ops and n.input and n.input[0] not in inits \
                and n.input[0] not in chain:
            chain.append(n.input[0])
            n = producers.get(n.input[0])
        if len(chain) > 1:
            out[t] = tuple(reversed(chain))
    return out


def _weight_axis(node: Any, rank: int) -> int:
    """The per-channel axis ORT's QDQ quantiser picks for this weight (conv.py, gemm.py ...)."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        return 0 if trans_b else 1
    return 1 if rank >= 2 else 0


def compute_layers(model: Any) -> list[LayerBits]:
    """Conv/MatMul/Gemm nodes with a float input activation and a constant weight."""
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type not in _WEIGHT_OPS or len(n.input) < 2:
            continue
        a, w = n.input[0], n.input[1]
        if a in inits or w not in inits or len(inits[w].dims) < 2:
            continue
        out.append(LayerBits(n.name, a, w, _weight_axis(n, len(inits[w].dims)),
                             depthwise=is_depthwise(n, tuple(inits[w].dims))))
    return out


def _weight_nsr(w: np.ndarray, axis: int) -> float:
    """Mean over output channels of the relative noise power of symmetric 8-bit weights."""
    per = np.moveaxis(w.astype(np.float64), axis, 0).reshape(w.shape[axis], -1)
    peak = np.abs(per).max(axis=1)
    power = (per ** 2).sum(axis=1)
    ok = power > 0
    if not ok.any():
        return 0.0
    step = peak[ok] / 127
    return float(np.mean(per.shape[1] * step ** 2 / 12 / power[ok]))


def _activation_nsr(rng: tuple[float, float] | None, mean_square: float | None) -> float:
    if rng is None or not mean_square:
        return 0.0
    step = (max(rng[1], 0.0) - min(rng[0], 0.0)) / 255
    return float(step ** 2 / 12 / mean_square)


def measure(model: Any, layers: list[LayerBits], samples: Iterable[Mapping[str, Any]],
            ranges: Mapping[str, tuple[float, float]]) -> list[LayerBits]:
    """The layers with their noise terms: weights from the graph, inputs from FP32 runs."""
    from onnx import numpy_helper

    from converters.quant._stats import stream_tensors

    names = sorted({lay.activation for lay in layers})
    sums: dict[str, float] = dict.fromkeys(names, 0.0)

    def add(got: dict[str, np.ndarray]) -> None:
        for k, v in got.items():
            sums[k] += float(np.mean(np.square(v, dtype=np.float64)))

    seen = stream_tensors(model, names, itertools.islice(samples, STAT_SAMPLES), add)
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for lay in layers:
        w = numpy_helper.to_array(inits[lay.weight])
        ms = sums[lay.activation] / seen if seen else None
        out.append(replace(lay, weight_nsr=_weight_nsr(w, lay.axis),
                           activation_nsr=_activation_nsr(ranges.get(lay.activation), ms)))
    return out


def split_for(policy: str, layers: list[LayerBits], readers: Mapping[str, int],
              ranges: Mapping[str, tuple[float, float]],
              ties: Mapping[str, tuple[str, ...]] | None = None) -> BitSplit:
    """The split a policy gives (pure). ``readers`` counts each tensor's quantised readers.

    ``per-layer``: a tensor goes 7-bit when its layers' summed cost is lower that way; each
    reader that is not one of those layers (Add, Concat, pooling ...) adds the activation's
    extra noise to the 7-bit side.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown bit-split policy {policy!r}; use one of {', '.join(POLICIES)}")
    by_tensor: dict[str, list[LayerBits]] = {}
    chosen: list[LayerBits] = []
    for lay in layers:
        if lay.depthwise:       # never paired: 8-bit weights cost nothing but the w7a8 baseline
            chosen.append(replace(lay, bits="w7a8" if policy == "w7a8" else "w8a8"))
        else:
            by_tensor.setdefault(lay.activation, []).append(lay)
    chains = dict(ties or {})
    for t, group in by_tensor.items():
        if seven_bit_params(*ranges.get(chains.get(t, (t,))[0], (np.nan, np.nan))) is None:
            chosen += [replace(lay, bits="w7a8", reason="no calibrated range for a 7-bit input")
                       for lay in group]
            continue
        w7 = sum(_W7_PENALTY * lay.weight_nsr + lay.activation_nsr for lay in group)
        a_nsr = max(lay.activation_nsr for lay in group)
        others = max(readers.get(t, len(group)) - len(group), 0)
        a7 = sum(lay.weight_nsr + _A7_PENALTY * lay.activation_nsr for lay in group) \
            + others * (_A7_PENALTY - 1) * a_nsr
        bits: Bits = ("w7a8" if policy in ("w7a8", "depthwise") else "w8a7" if policy == "w8a7"
                      else "w8a7" if a7 < w7 else "w7a8")
        chosen += [replace(lay, bits=bits) for lay in group]
    order = {lay.node: i for i, lay in enumerate(layers)}
    return BitSplit(policy, tuple(sorted(chosen, key=lambda lay: order[lay.node])),
                    ties=tuple(sorted((t, c) for t, c in chains.items() if t in by_tensor)))


def clamp_seven_bit(model: Any, params: Mapping[str, tuple[float, int]]) -> tuple[Any, list[str]]:
    """Insert a uint8 Clip to 127 after the QuantizeLinear of each 7-bit tensor (in place).

    Only where that QuantizeLinear carries the 7-bit scale and zero point asked for: a tensor
    ORT quantised otherwise (tied to another tensor's parameters) gets no clamp, and the
    checker then finds its readers unproved.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    scalars = {i.name: numpy_helper.to_array(i) for i in g.initializer
               if len(i.dims) == 0 or np.prod(i.dims) == 1}
    lo, hi = "x86_split_u8_0", "x86_split_u8_127"
    done: list[str] = []
    for idx in range(len(g.node) - 1, -1, -1):
        q = g.node[idx]
        if q.op_type != "QuantizeLinear" or q.input[0] not in params or len(q.input) < 3:
            continue
        scale, zp = params[q.input[0]]
        got_s, got_z = scalars.get(q.input[1]), scalars.get(q.input[2])
        if got_s is None or got_z is None or got_z.dtype != np.uint8 \
                or int(got_z.ravel()[0]) != zp \
                or not np.isclose(float(got_s.ravel()[0]), scale, rtol=1e-6, atol=0.0):
            continue
        clipped = f"{q.output[0]}_7bit"
        for n in g.node:
            for i, name in enumerate(n.input):
                if name == q.output[0]:
                    n.input[i] = clipped
        g.node.insert(idx + 1, helper.make_node("Clip", [q.output[0], lo, hi], [clipped],
                                                name=f"{q.input[0]}_clip_7bit"))
        done.append(q.input[0])
    if done:
        g.initializer.extend([numpy_helper.from_array(np.array(0, np.uint8), lo),
                              numpy_helper.from_array(np.array(_A7_QMAX, np.uint8), hi)])
    return model, sorted(done)
