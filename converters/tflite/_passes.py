"""The quantisation engine's graph passes, run on the prepared ONNX graph before lowering.

Full-integer targets cannot keep a layer float, so what the engine does for the ONNX CPU path
matters more here: :mod:`converters.quant.equalise` (exact in FP32) and
:mod:`converters.quant.bias_correction` run on the graph :mod:`converters.tflite._prep` made
(static shapes, constants and BatchNormalization folded, so Conv pairs that a BatchNormalization
separated in the source are adjacent), with the weight rounding the TFLite writer will use
(per tensor on Edge TPU, per channel on convolutions elsewhere; FULLY_CONNECTED always per
tensor). :mod:`converters.quant.adaround` (effort ``max``) rounds onto that same grid
(:class:`converters.tflite._rounding.WriterGrid`), and bias correction then measures the mean
shift from the weights as they were before AdaRound, as on the ONNX path. The passes are the
engine's own modules, run guarded: one that raises is a ``failed`` outcome and the graph stays
as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from converters.quant.adaround import AdaRound
from converters.quant.base import PassOutcome, run_guarded
from converters.quant.bias_correction import BiasCorrection, BiasCorrectionSettings
from converters.quant.equalise import CrossLayerEqualisation
from converters.tflite._prep import Prepared
from converters.tflite._rounding import WriterGrid

__all__ = ["GraphPassResult", "per_tensor_ops", "run_graph_passes", "writer_grid"]

# engine passes the full-integer TFLite path does not run, and why (recorded as skipped)
NOT_FED = {"smoothquant": "not fed to the full-integer TFLite path: its Mul folds into a "
                          "LayerNormalization that the TFLite lowering decomposes"}


def per_tensor_ops(per_channel: bool | str) -> tuple[str, ...]:
    """ONNX op types whose weights the TFLite writer rounds per tensor for ``per_channel``."""
    return ("Gemm",) if per_channel in (True, "conv-only") else ("Conv", "Gemm")


def writer_grid(per_channel: bool | str) -> WriterGrid:
    """The TFLite writer's weight grid for ``per_channel`` (MatMul lowers to FULLY_CONNECTED)."""
    return WriterGrid((*per_tensor_ops(per_channel), "MatMul"))


@dataclass
class GraphPassResult:
    """What the graph passes did; ``original_biases`` undoes bias correction (by const
    name). The candidates without AdaRound come from a run without it
    (:class:`converters.tflite.fullint.Candidates`), not from this graph with its weights put
    back."""

    outcomes: list[PassOutcome] = field(default_factory=list)
    bias_adds_folded: int = 0
    original_biases: dict[str, np.ndarray] = field(default_factory=dict)
    bias: BiasCorrection | None = None
    adaround: AdaRound | None = None


def run_graph_passes(prep: Prepared, opset_imports: Any, names: tuple[str, ...], samples: Any,
                     per_channel: bool | str) -> GraphPassResult:
    """Run the engine's graph passes named in ``names`` on ``prep`` in place (its graph and
    constants); ``samples`` has ``iter_samples()`` and ``len()`` (ONNX-layout feeds)."""
    from converters.quant._graph import privatise_params

    res = GraphPassResult()
    wanted = [n for n in names if n != "mse_ranges"]
    if not wanted:
        return res
    model = onnx.helper.make_model(prep.graph, opset_imports=list(opset_imports))
    _name_nodes(model)
    res.bias_adds_folded = fold_bias_adds(model)
    privatise_params(model)
    for name in wanted:
        if name in NOT_FED:
            res.outcomes.append(PassOutcome(name, "skipped", NOT_FED[name]))
            continue
        pass_: Any = (CrossLayerEqualisation() if name == "cross_layer_equalisation"
                      else AdaRound(weight_grid=writer_grid(per_channel)) if name == "adaround"
                      else BiasCorrection(BiasCorrectionSettings(
                          per_tensor_ops=per_tensor_ops(per_channel)),
                          res.adaround.originals if res.adaround else None))
        why = pass_.applies(model)
        if why is not None:
            res.outcomes.append(PassOutcome(name, "skipped", why))
            continue

        def go(p: Any = pass_, m: Any = model) -> tuple[Any, PassOutcome]:
            out: tuple[Any, PassOutcome] = (p.run(m) if p.name == "cross_layer_equalisation"
                                            else p.run(m, samples))
            return out

        model, outcome = run_guarded(name, go, model)
        res.outcomes.append(outcome)
        if outcome.status == "applied" and isinstance(pass_, AdaRound):
            res.adaround = pass_
        if outcome.status == "applied" and isinstance(pass_, BiasCorrection):
            res.bias = pass_
            res.original_biases = {t.bias: t.original for t in pass_.targets}
    _write_back(prep, model)
    return res


def fold_bias_adds(model: Any) -> int:
    """``Conv -> Add(per-channel constant)`` becomes one Conv with that bias.

    Exporters (Paddle's among them) write a convolution's bias as a separate Add; the TFLite
    lowering folds it later (the ``affine`` rewrite), but the engine's passes look for a Conv
    with a constant bias: without this, equalisation cannot see the pair through the Add and
    bias correction leaves the layer alone. Exact (the same sum). Returns how many folded.
    """
    from converters.quant._graph import Graph

    g = Graph(model)
    folded = 0
    drop: set[int] = set()
    for add in list(model.graph.node):
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        for k in (0, 1):
            conv = g.producer.get(add.input[k])
            bias = g.const(add.input[1 - k])
            if conv is None or conv.op_type != "Conv" or bias is None or len(conv.input) < 2:
                continue
            w = g.const(conv.input[1])
            if w is None or bias.dtype != np.float32:
                continue
            c = w.shape[0]
            rank = len(w.shape)              # the conv output's rank
            shape = bias.shape
            # broadcast from the right: the bias's axis under the output's channel axis holds c
            sole: Any = g.sole_consumer(conv.output[0])
            if (sole is not add or bias.size != c
                    or len(shape) > rank or len(shape) < rank - 1
                    or shape[len(shape) - (rank - 1)] != c):
                continue
            old = (g.const(conv.input[2]) if len(conv.input) > 2 and conv.input[2]
                   else np.zeros(c, np.float32))
            if old is None:
                continue
            name = f"{conv.name}__bias"
            model.graph.initializer.append(
                numpy_helper.from_array((old + bias.reshape(c)).astype(np.float32), name))
            inputs = [conv.input[0], conv.input[1], name]
            del conv.input[:]
            conv.input.extend(inputs)
            conv.output[0] = add.output[0]
            drop.add(id(add))
            folded += 1
            break
    if drop:
        keep = [n for n in model.graph.node if id(n) not in drop]
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return folded


def _name_nodes(model: Any) -> None:
    """Passes find layers by node name: an unnamed node takes its first output's name."""
    taken = {n.name for n in model.graph.node if n.name}
    for n in model.graph.node:
        if not n.name:
            name, k = n.output[0], 1
            while name in taken:
                name, k = f"{n.output[0]}_{k}", k + 1
            n.name = name
            taken.add(name)


def _write_back(prep: Prepared, model: Any) -> None:
    """Put the passes' graph (renamed private parameters) and constants into ``prep``."""
    prep.graph.CopyFrom(model.graph)
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        prep.consts[init.name] = arr
        prep.shapes[init.name] = tuple(arr.shape)
        prep.dtypes[init.name] = arr.dtype
