"""Peephole rewrites on the TFLite graph: fewer, fused ops where LiteRT has a faster kernel.

Each rewrite is exact in real arithmetic and is applied only when the intermediate tensors are
read by the pattern alone. Which rewrites run is the caller's decision (measured per machine in
``_fusion_perf``); every function returns how many places it changed.

* ``affine``: a per-channel (or scalar) MUL then ADD by constants right after a CONV_2D,
  DEPTHWISE_CONV_2D or FULLY_CONNECTED is folded into its weights and bias (MobileOne-style
  learnable scales, HardSigmoid's slope and offset after an SE convolution); so is one right
  before such an op (a MUL always, an ADD where the op reads no zero padding).
* ``relu_0_to_1``: MAXIMUM(x, 0) → MINIMUM(., 1) becomes RELU_0_TO_1.
* ``rsqrt``: DIV(a, SQRT(b)) becomes MUL(a, RSQRT(b)) (normalisation layers).
* ``squared_difference``: SQUARE(SUB(a, b)) becomes SQUARED_DIFFERENCE(a, b).
* ``fused_relu_n1_to_1``: RELU_N1_TO_1 after CONV/FC/ADD/MUL becomes its fused activation, as
  RELU and RELU6 already are (``Graph.fuse_activations``).
"""

from __future__ import annotations

import numpy as np

from converters.tflite._ir import Graph, Op

__all__ = ["IR_REWRITES", "apply", "fold_layout_chains"]

IR_REWRITES = ("affine", "relu_0_to_1", "rsqrt", "squared_difference", "fused_relu_n1_to_1")

_WEIGHTED = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}  # output-channel axis
_FUSABLE = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL",
            "TRANSPOSE_CONV", "AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"}


def _sole_reader(g: Graph, name: str) -> Op | None:
    if name in g.outputs:
        return None
    readers = list(g.consumers(name))
    return readers[0] if len(readers) == 1 else None


def _scalar(g: Graph, name: str) -> float | None:
    t = g.tensors[name]
    if t.data is None or t.data.size != 1:
        return None
    return float(t.data.ravel()[0])


def _channel_vector(g: Graph, name: str, channels: int) -> np.ndarray | None:
    """A constant broadcast only along the last axis (or a scalar), as a [channels] vector."""
    t = g.tensors[name]
    if t.data is None or t.dtype != "float32":
        return None
    d = t.data
    if d.size == 1:
        return np.full(channels, float(d.ravel()[0]), np.float64)
    if d.shape[-1] == channels and d.size == channels:
        return d.reshape(-1).astype(np.float64)
    return None


def _fold_affine(g: Graph) -> int:
    done = 0
    for op in list(g.ops):
        if op.kind not in _WEIGHTED or op not in g.ops or \
                op.options.get("fusedActivationFunction", 0) != 0 or len(op.inputs) < 3 \
                or not op.inputs[2] or not g.is_const(op.inputs[1]):
            continue
        while True:
            nxt = _sole_reader(g, op.outputs[0])
            if nxt is None or nxt.kind not in ("MUL", "ADD") or \
                    op.options.get("fusedActivationFunction", 0) != 0:
                break
            y = op.outputs[0]
            other = nxt.inputs[1] if nxt.inputs[0] == y else nxt.inputs[0]
            if other == y or g.tensors[nxt.outputs[0]].shape != g.tensors[y].shape:
                break
            w_t, b_t = g.tensors[op.inputs[1]], g.tensors[op.inputs[2]]
            assert w_t.data is not None and b_t.data is not None
            k = _channel_vector(g, other, int(b_t.data.size))
            if k is None:
                break
            w, b = w_t.data.astype(np.float64), b_t.data.astype(np.float64)
            if nxt.kind == "MUL":
                shape = [1] * w.ndim
                shape[_WEIGHTED[op.kind]] = -1
                w, b = w * k.reshape(shape), b * k
            else:
                b = b + k
            # fresh constants: the originals may be shared with another op
            op.inputs[1] = g.add_const(op.inputs[1] + "_folded", w.astype(np.float32))
            op.inputs[2] = g.add_const(op.inputs[2] + "_folded", b.astype(np.float32))
            # the folded op's activation (RELU fused into the ADD) moves to the conv
            op.options["fusedActivationFunction"] = nxt.options.get("fusedActivationFunction", 0)
            out = nxt.outputs[0]
            g.ops.remove(nxt)
            if out in g.outputs:
                _retarget(g, op, out)
            else:
                g.replace_uses(out, y)
            done += 1
    return done


def _fold_affine_forward(g: Graph) -> int:
    """MUL (any padding) or ADD (unpadded only) by per-channel constants right before a
    convolution or FULLY_CONNECTED becomes part of its weights and bias.

    MobileOne-style ``act * a + b`` learnable scales sit between activation and the next
    convolution. Scaling an input channel scales the weights that read it; adding ``c`` adds
    ``sum(w * c)`` to each output's bias, which is exact only where no zero padding is read.
    """
    done = 0
    changed = True
    while changed:
        changed = False
        for op in list(g.ops):
            if op.kind not in ("MUL", "ADD") or op.options.get("fusedActivationFunction", 0):
                continue
            nxt = _sole_reader(g, op.outputs[0])
            if nxt is None or nxt.kind not in _WEIGHTED or nxt.inputs[0] != op.outputs[0] \
                    or len(nxt.inputs) < 3 or not nxt.inputs[2] \
                    or not g.is_const(nxt.inputs[1]):
                continue
            consts = [i for i in op.inputs if g.is_const(i)]
            x = next((i for i in op.inputs if not g.is_const(i)), None)
            if len(consts) != 1 or x is None or g.tensors[x].shape != g.tensors[op.outputs[0]].shape:
                continue
            w_t, b_t = g.tensors[nxt.inputs[1]], g.tensors[nxt.inputs[2]]
            assert w_t.data is not None and b_t.data is not None
            w, b = w_t.data.astype(np.float64), b_t.data.astype(np.float64)
            cin = int(g.tensors[x].shape[-1])
            k = _channel_vector(g, consts[0], cin)
            if k is None:
                continue
            if nxt.kind == "DEPTHWISE_CONV_2D":
                k_out = np.repeat(k, w.shape[3] // cin)          # input channel of each output
                if op.kind == "MUL":
                    w = w * k_out.reshape(1, 1, 1, -1)
                elif nxt.options.get("padding") == 1:
                    b = b + (w * k_out.reshape(1, 1, 1, -1)).sum(axis=(0, 1, 2))
                else:
                    continue
            else:
                kk = k.reshape((1,) * (w.ndim - 1) + (-1,))
                if op.kind == "MUL":
                    w = w * kk
                elif nxt.kind == "FULLY_CONNECTED" or nxt.options.get("padding") == 1:
                    b = b + (w * kk).reshape(w.shape[0], -1).sum(axis=1)
                else:
                    continue
            nxt.inputs[1] = g.add_const(nxt.inputs[1] + "_folded", w.astype(np.float32))
            nxt.inputs[2] = g.add_const(nxt.inputs[2] + "_folded", b.astype(np.float32))
            nxt.inputs[0] = x
            g.ops.remove(op)
            done += 1
            changed = True
    return done


def _retarget(g: Graph, op: Op, out: str) -> None:
    """``op`` writes graph output ``out`` directly (its own output tensor disappears)."""
    old = op.outputs[0]
    op.outputs[0] = out
    g.replace_uses(old, out)


def _relu_0_to_1(g: Graph) -> int:
    done = 0
    for op in list(g.ops):
        if op.kind != "MAXIMUM" or op not in g.ops:
            continue
        lo = next((_scalar(g, i) for i in op.inputs if g.is_const(i)), None)
        x = next((i for i in op.inputs if not g.is_const(i)), None)
        nxt = _sole_reader(g, op.outputs[0])
        if lo != 0.0 or x is None or nxt is None or nxt.kind != "MINIMUM":
            continue
        hi = next((_scalar(g, i) for i in nxt.inputs if g.is_const(i)), None)
        if hi != 1.0 or g.tensors[nxt.outputs[0]].shape != g.tensors[x].shape:
            continue
        g.ops.remove(op)
        nxt.kind, nxt.inputs, nxt.options = "RELU_0_TO_1", [x], {}
        done += 1
    return done


def _rsqrt(g: Graph) -> int:
    done = 0
    for op in list(g.ops):
        if op.kind != "DIV" or op.options.get("fusedActivationFunction", 0) != 0:
            continue
        sq = g.producer(op.inputs[1])
        if sq is None or sq.kind != "SQRT" or _sole_reader(g, op.inputs[1]) is not op:
            continue
        sq.kind = "RSQRT"
        op.kind = "MUL"
        done += 1
    return done


def _squared_difference(g: Graph) -> int:
    done = 0
    for op in list(g.ops):
        if op.kind != "SQUARE":
            continue
        sub = g.producer(op.inputs[0])
        if sub is None or sub.kind != "SUB" or sub.options.get("fusedActivationFunction", 0) \
                or _sole_reader(g, op.inputs[0]) is not op:
            continue
        op.kind, op.inputs = "SQUARED_DIFFERENCE", list(sub.inputs)
        g.ops.remove(sub)
        done += 1
    return done


def _fused_relu_n1_to_1(g: Graph) -> int:
    done = 0
    for op in list(g.ops):
        if op.kind != "RELU_N1_TO_1":
            continue
        prod = g.producer(op.inputs[0])
        if prod is None or prod.kind not in _FUSABLE or \
                prod.options.get("fusedActivationFunction", 0) != 0 or \
                _sole_reader(g, prod.outputs[0]) is not op:
            continue
        prod.options["fusedActivationFunction"] = 2
        g.ops.remove(op)
        if op.outputs[0] in g.outputs:
            _retarget(g, prod, op.outputs[0])
        else:
            g.replace_uses(op.outputs[0], prod.outputs[0])
        done += 1
    return done


def fold_layout_chains(g: Graph, max_elems: int = 1 << 22) -> int:
    """A chain of TRANSPOSE/RESHAPE ops that keeps memory order becomes one RESHAPE.

    ``NHWC [1, 1, W, C] → TRANSPOSE → [1, C, 1, W] → RESHAPE [1, C, W] → TRANSPOSE [1, W, C]``
    (a conv feature map flattened for an encoder) moves nothing in memory. Decided exactly by
    pushing element indices through the chain. Always applied: it removes ops and is exact.
    """
    done = 0
    layout = ("TRANSPOSE", "RESHAPE")
    for op in list(g.ops):
        if op not in g.ops or op.kind not in layout:
            continue
        prev = g.producer(op.inputs[0])
        if prev is not None and prev.kind in layout and _sole_reader(g, prev.outputs[0]) is op:
            continue                                 # start only at the head of a chain
        chain = [op]
        while True:
            nxt = _sole_reader(g, chain[-1].outputs[0])
            if nxt is None or nxt.kind not in layout or nxt.inputs[0] != chain[-1].outputs[0]:
                break
            chain.append(nxt)
        if len(chain) < 2 or sum(c.kind == "TRANSPOSE" for c in chain) == 0:
            continue
        src = chain[0].inputs[0]
        size = int(np.prod(g.tensors[src].shape))
        if size > max_elems:
            continue
        idx = np.arange(size).reshape(g.tensors[src].shape)
        for c in chain:
            if c.kind == "TRANSPOSE":
                perm = g.tensors[c.inputs[1]].data
                if perm is None:
                    break
                idx = idx.transpose([int(v) for v in perm])
            else:
                idx = idx.reshape(g.tensors[c.outputs[0]].shape)
        else:
            if not np.array_equal(idx.ravel(), np.arange(size)):
                continue
            last, shape = chain[-1], g.tensors[chain[-1].outputs[0]].shape
            for c in chain[:-1]:
                g.ops.remove(c)
            last.kind, last.options = "RESHAPE", {"newShape": [int(d) for d in shape]}
            last.inputs = [src, g.add_const("shape", np.array(shape, np.int32))]
            done += 1
    g.prune()
    return done


def _affine(g: Graph) -> int:
    return _fold_affine(g) + _fold_affine_forward(g)


_PASSES = {"affine": _affine, "relu_0_to_1": _relu_0_to_1, "rsqrt": _rsqrt,
           "squared_difference": _squared_difference, "fused_relu_n1_to_1": _fused_relu_n1_to_1}


def apply(g: Graph, enabled: tuple[str, ...] = IR_REWRITES) -> dict[str, int]:
    """Run the enabled rewrites in a fixed order; how often each one fired."""
    counts = {k: _PASSES[k](g) for k in IR_REWRITES if k in enabled}
    g.prune()
    return counts
