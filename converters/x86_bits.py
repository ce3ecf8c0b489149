"""The x86-cpu bit split in a build: candidates, the choice on the task metric, the proof.

Why apart from :mod:`converters.x86_split` (the split itself, pure) and
:mod:`converters.x86_exact` (the checker, pure): this is the sequence a build runs, with the
quantiser and the validation injected, so the static pass (converters/onnx_quant) only calls it:

1. :func:`candidates`: measure each layer's weight and input noise once, and derive the three
   splits of :data:`converters.x86_split.POLICIES`;
2. :func:`choose`: quantise and validate each distinct candidate, keep the one that drops the
   task metric least (the previous default, 7-bit weights everywhere, wins ties);
3. :func:`enforce`, after every quantisation of the build: clamp the 7-bit activations, prove
   the artifact cannot saturate a u8s8 pair; a layer that is not proved goes back to 7-bit
   weights and the model is quantised once more; if it is still not proved, the build stops
   (an artifact that saturates is silently wrong on the device).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from converters.x86_exact import exactness_summary, saturation_violations, u8s8_products
from converters.x86_split import (
    POLICIES,
    BitSplit,
    clamp_seven_bit,
    compute_layers,
    measure,
    split_for,
    tie_chains,
)
from edgeops.errors import ConversionError

__all__ = ["candidates", "check_artifact", "choose", "enforce"]

Overrides = dict[str, list[dict[str, Any]]]


def candidates(model_path: Path, samples: Iterable[Mapping[str, Any]],
               ranges: Mapping[str, tuple[float, float]]) -> dict[str, BitSplit]:
    """One split per policy for the model about to be quantised (FP32 statistics, measured)."""
    import onnx

    model = onnx.load(str(model_path))
    layers = measure(model, compute_layers(model), samples, ranges)
    readers: dict[str, int] = {}
    for n in model.graph.node:
        for t in set(n.input):
            readers[t] = readers.get(t, 0) + 1
    from converters.onnx_int8_graph import TIED_OPS

    ties = tie_chains(model, TIED_OPS)
    return {p: split_for(p, layers, readers, ranges, ties) for p in POLICIES}


def choose(splits: Mapping[str, BitSplit], score_of: Callable[[BitSplit], tuple[float, float]]
           ) -> tuple[BitSplit, dict[str, dict[str, float]]]:
    """The split whose artifact scores best: least task-metric drop, then least output error.

    ``score_of`` gives (the gate's relative drop, an output error such as -SNR); the second
    only breaks ties of the first, which on a few validation samples are common (one sample
    of twelve is 8.3 % of top-1). Equal scores go to the earlier (cheaper) policy. Splits
    giving the same bits as an earlier one are not measured again.
    """
    scores: dict[str, tuple[float, float]] = {}
    seen: set[tuple[tuple[str, str], ...]] = set()
    for policy, split in splits.items():
        key = tuple((lay.node, lay.bits) for lay in split.layers)
        if key in seen:
            continue
        seen.add(key)
        drop, err = score_of(split)
        scores[policy] = (float(drop), float(err))
    order = list(scores)
    best = min(order, key=lambda p: (scores[p], order.index(p)))
    return splits[best], {p: {"drop": d, "output_error": e} for p, (d, e) in scores.items()}


def check_artifact(model: Any, what: str) -> dict[str, Any]:
    """The checker's summary of ``model``; ConversionError when a u8s8 pair can saturate."""
    products = u8s8_products(model)
    bad = [p for p in products if not p.exact]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ConversionError(
            f"{what}: the INT8 artifact could saturate ONNX Runtime's u8s8 kernels on x86 "
            f"without VNNI: {bad[0].describe()}{more}",
            hint="build for x86-cpu-vnni if every device has VNNI, or report this as a bug: "
                 "x86-cpu artifacts must be exact on every x86 CPU")
    return exactness_summary(products)


def enforce(out: Path, split: BitSplit, ranges: Mapping[str, tuple[float, float]],
            base: Overrides, quantise: Callable[[Overrides], None], what: str
            ) -> tuple[BitSplit, dict[str, Any]]:
    """Quantise with ``split`` into ``out``, clamp, and prove it exact (see module docstring).

    Returns the split the artifact has (possibly with layers demoted) and the checker's summary.
    """
    import onnx

    for attempt in (0, 1):
        quantise(split.overrides(ranges, base))
        model = onnx.load(str(out))
        model, clamped = clamp_seven_bit(model, split.activation_params(ranges, base))
        if clamped:
            onnx.save(model, str(out))
        bad = {p.node for p in saturation_violations(model)}
        fixable = {lay.node for lay in split.layers if lay.bits != "w7a8"} & bad
        if not bad or attempt or not fixable:
            break
        split = split.demote(fixable)
    summary = check_artifact(model, what)
    return split, {**summary, "clamped_7bit_activations": clamped}
