"""Performance-aware quantisation: keep in float what INT8 makes slower, measured here.

Quantising every node is not always faster: Q/DQ pairs around cheap element-wise ops, small or
depthwise convolutions and layout ops can cost more than the INT8 kernels save, and which ones
do depends on the CPU (and on the model: a tiny model may be faster entirely in float). So node
groups (one op type of cheap ops; small convs; depthwise convs; then the remaining convs and
each other op type) are tried in float one at a time, the model is timed on this machine, and a
group stays in float only when that is faster by more than ``MIN_GAIN``, twice in a row.
Greedy, cumulative.

Timing varies run to run, and builds must be reproducible, so decisions are cached per machine
under ``$EDGEOPS_HOME/cache/perf`` keyed by model digest, target, precision, ORT version, CPU
model and threads: the first build measures, later identical builds reuse the decision.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from converters.api import BackendContext
from edgeops.config import edgeops_home
from edgeops.fsutil import atomic_write

__all__ = ["CHEAP_OPS", "MIN_GAIN", "node_groups", "slower_groups"]

MIN_GAIN = 0.05               # a group stays float only if that is >5% faster (noise margin)
TIMING_RUNS = 20
SMALL_CONV_WEIGHTS = 4096     # weight elements below which a conv counts as small
CHEAP_OPS = ("Add", "Mul", "Sub", "Div", "Concat", "Resize", "MaxPool", "AveragePool",
             "GlobalAveragePool", "Sigmoid", "Softmax", "Transpose", "Reshape", "Flatten",
             "Squeeze", "Unsqueeze", "Split", "Slice", "Pad", "LeakyRelu", "Clip", "Relu",
             "Gather", "ReduceMean", "HardSigmoid", "HardSwish", "Tanh", "Where", "Expand")


def node_groups(model: Any, quantised: set[str]) -> dict[str, list[str]]:
    """Pure: candidate groups of quantised nodes, by kind, in a stable order."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    groups: dict[str, list[str]] = {}
    for n in model.graph.node:
        if n.name not in quantised:
            continue
        if n.op_type in CHEAP_OPS:
            groups.setdefault(f"op:{n.op_type}", []).append(n.name)
        elif n.op_type in ("Conv", "ConvTranspose") and len(n.input) > 1 and n.input[1] in inits:
            w = numpy_helper.to_array(inits[n.input[1]])
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            if group > 1 and group == w.shape[0]:
                groups.setdefault("depthwise-conv", []).append(n.name)
            elif w.size < SMALL_CONV_WEIGHTS:
                groups.setdefault("small-conv", []).append(n.name)
            else:
                groups.setdefault("conv", []).append(n.name)
        else:
            groups.setdefault(f"op:{n.op_type}", []).append(n.name)
    # Cheap and small groups first; the heavy ones last, tried against what is left.
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] in _HEAVY, kv[0])))


_HEAVY = ("conv", "op:MatMul", "op:Gemm", "op:ConvTranspose", "op:GRU", "op:LSTM")


def _cache_path(ctx: BackendContext, facts: dict[str, Any], groups: dict[str, list[str]]
                ) -> Path:
    import platform

    import onnxruntime

    cpu = ""
    try:
        cpu = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "")
    except OSError:
        pass
    key = json.dumps({"source": ctx.shared["source"].sha256, "target": ctx.profile.name,
                      "precision": ctx.precision, "ort": onnxruntime.__version__,
                      "cpu": cpu or platform.processor(), "facts": facts,
                      "threads": ctx.request.threads, "groups": groups}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return edgeops_home() / "cache" / "perf" / f"{digest}.json"


def _time(path: Path, ctx: BackendContext) -> float:
    from converters.onnx_backend import LATENCY_WARMUP
    from converters.validate import _session, latency_ms

    sess = _session(path, ("CPUExecutionProvider",), ctx.request.threads)
    feed = ctx.shared["validation"].sample(0)
    return latency_ms(lambda: sess.run(None, feed), warmup=LATENCY_WARMUP,
                      runs=TIMING_RUNS)["p50"]


def slower_groups(ctx: BackendContext, prepared: Path, make: Callable[[set[str]], Path],
                  quantised: set[str], facts: dict[str, Any]) -> dict[str, str]:
    """Nodes to keep in float because quantising them was measured slower (node -> reason)."""
    import onnx

    groups = node_groups(onnx.load(str(prepared)), quantised)
    if not groups:
        return {}
    if len(groups) > 1:
        # Last resort, tried against what is left: nothing quantised at all.
        groups["all-remaining"] = sorted(quantised)
    cache = _cache_path(ctx, facts, groups)
    decided: dict[str, str] | None = None
    if ctx.request.options.get("perf_cache", True) and cache.is_file():
        try:
            decided = dict(json.loads(cache.read_text())["float_nodes"])
        except (OSError, ValueError, KeyError, TypeError):
            decided = None
    if decided is not None:
        return decided
    best = _time(make(set()), ctx)
    kept: dict[str, str] = {}
    trials = []
    for gname, nodes in groups.items():
        nodes = [n for n in nodes if n not in kept]
        if not nodes:
            continue
        t = _time(make(set(kept) | set(nodes)), ctx)
        trials.append({"group": gname, "nodes": len(nodes), "p50_ms": t, "best_ms": best})
        if t < best * (1 - MIN_GAIN):
            # Confirm against noise (other processes share the CPU): time both once more.
            b2 = _time(make(set(kept)), ctx)
            t2 = _time(make(set(kept) | set(nodes)), ctx)
            trials[-1].update({"confirm_best_ms": b2, "confirm_p50_ms": t2})
            if max(t, t2) >= min(best, b2) * (1 - MIN_GAIN):
                continue
            for n in nodes:
                kept[n] = (f"performance: {gname} measured {best / t:.2f}x faster in float "
                           f"on this machine ({best:.3f} → {t:.3f} ms p50)")
            best = min(t, t2)
    atomic_write(cache, json.dumps({"float_nodes": kept, "trials": trials}, indent=2,
                                   sort_keys=True).encode())
    return kept
