"""Per-layer speed model: what each layer costs in float and in INT8 on the build machine.

The mixed-precision choice (converters/mixed_precision) needs, per candidate layer, the time
that keeping it INT8 saves. ONNX Runtime's profiler reports each kernel's time; the FP32
model and the INT8 QDQ model are profiled (``profile_runs`` runs each, the per-kernel median
taken) and each kernel attributed to a layer of the prepared graph. ORT renames what it fuses:
a fused QDQ kernel keeps the layer's name with a ``_token_N`` suffix (``conv1_token_1``), a
float kernel in NCHWc layout takes its output's name (``a1_nchwc``, where ``a1`` may be the
output of an activation fused into the convolution). :func:`attribute` undoes that from the
graph alone (names and outputs, never op names or model names): a kernel named after a node is
that node's; one named after a tensor belongs to its producer, walked back through the
single-input activations ORT fuses into the layer before it. A layer none of whose kernels
can be attributed on one side gets the median float/INT8 ratio of the layers that could (on
neither side: their median times), and is listed as estimated.

Like the performance-aware pass (converters/onnx_perf), timings vary run to run and builds must
be reproducible, so the table is cached per machine under ``$EDGEOPS_HOME/cache/perf``, keyed
by the two models' bytes, ORT version, CPU and threads.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeops.config import edgeops_home
from edgeops.fsutil import atomic_write

__all__ = ["LayerTimes", "attribute", "layer_times"]

CACHE_VERSION = 1
_SUFFIXES = re.compile(r"(_token_\d+|_nchwc|_kernel_time)+$")
# Single-input ops ORT fuses into the compute node before them (activation fusion).
_FUSED_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid",
                      "Tanh")


@dataclass(frozen=True)
class LayerTimes:
    """Per layer: kernel milliseconds per run in float and in INT8; which were estimated."""

    float_ms: Mapping[str, float]
    int8_ms: Mapping[str, float]
    estimated: tuple[str, ...] = ()

    def saving_ms(self, node: str) -> float:
        return self.float_ms.get(node, 0.0) - self.int8_ms.get(node, 0.0)


def attribute(kernels: Mapping[str, float], graph_nodes: Sequence[tuple[str, str, Sequence[str],
                                                                     Sequence[str]]]
              ) -> dict[str, float]:
    """Pure: kernel name -> ms, summed per graph node (``(name, op, inputs, outputs)``).

    Kernels that match no node and no tensor (layout reorders, inserted transposes) are left
    out: they are not a layer's choice.
    """
    names = {n for n, _, _, _ in graph_nodes}
    producer = {o: (n, op, ins) for n, op, ins, outs in graph_nodes for o in outs}
    out: dict[str, float] = {}
    for kernel, ms in sorted(kernels.items()):
        base = _SUFFIXES.sub("", kernel)
        owner: str | None = base if base in names else None
        if owner is None and base in producer:
            name, op, ins = producer[base]
            # an activation ORT fused into the layer before it: the time is that layer's
            while op in _FUSED_ACTIVATIONS and ins and ins[0] in producer:
                name, op, ins = producer[ins[0]]
            owner = name
        if owner is not None:
            out[owner] = out.get(owner, 0.0) + ms
    return out


def _profile(model: Path | bytes, feed: Mapping[str, Any], runs: int, threads: int
             ) -> dict[str, float]:
    """Median milliseconds per run of each kernel ORT ran for ``model``."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgeops-profile-") as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "p")
        sess = ort.InferenceSession(str(model) if isinstance(model, Path) else model, so,
                                    providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):                # the first run warms up: left out below
            sess.run(None, dict(feed))
        events = json.loads(Path(sess.end_profiling()).read_text())
    per: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            per.setdefault(e["name"], []).append(float(e["dur"]) / 1000.0)
    return {k: statistics.median(v[1:] if len(v) > runs else v) for k, v in per.items()}


def _graph_nodes(model: Any) -> list[tuple[str, str, list[str], list[str]]]:
    return [(n.name, n.op_type, list(n.input), list(n.output)) for n in model.graph.node]


def layer_times(float_model: Path, qdq_model: Path, layers: Iterable[str],
                feed: Mapping[str, Any], *, runs: int, threads: int,
                cache_key: Mapping[str, Any] | None = None) -> LayerTimes:
    """Float and INT8 kernel time of each of ``layers``, profiled here (or from the cache)."""
    import onnx

    wanted = sorted(set(layers))
    cache = _cache_path(float_model, qdq_model, wanted, threads, runs, cache_key)
    if cache is not None and cache.is_file():
        try:
            doc = json.loads(cache.read_text())
            return LayerTimes(dict(doc["float_ms"]), dict(doc["int8_ms"]),
                              tuple(doc["estimated"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    f_model = onnx.load(str(float_model), load_external_data=False)
    q_model = onnx.load(str(qdq_model), load_external_data=False)
    f_ms = attribute(_profile(float_model, feed, runs, threads), _graph_nodes(f_model))
    q_ms = attribute(_profile(qdq_model, feed, runs, threads), _graph_nodes(q_model))
    times = fill_missing(wanted, f_ms, q_ms)
    if cache is not None:
        atomic_write(cache, json.dumps({"float_ms": dict(times.float_ms),
                                        "int8_ms": dict(times.int8_ms),
                                        "estimated": list(times.estimated)},
                                       indent=2, sort_keys=True).encode())
    return times


def fill_missing(layers: Sequence[str], f_ms: Mapping[str, float], q_ms: Mapping[str, float]
                 ) -> LayerTimes:
    """Pure: the table for ``layers``; a side not attributed is estimated from the others'
    median float/INT8 ratio (1.0 when no layer has both), a layer with neither side gets
    the medians of the layers that have both (0 when none: then nothing is known)."""
    both = [n for n in layers if n in f_ms and n in q_ms and q_ms[n] > 0]
    ratio = statistics.median(f_ms[n] / q_ms[n] for n in both) if both else 1.0
    # a layer with no kernel attributed on either side: the typical measured layer
    typical = (statistics.median(f_ms[n] for n in both), statistics.median(q_ms[n] for n in both)
               ) if both else (0.0, 0.0)
    fl: dict[str, float] = {}
    q8: dict[str, float] = {}
    estimated = []
    for n in layers:
        f, q = f_ms.get(n), q_ms.get(n)
        if f is None and q is not None:
            f = q * ratio
        elif q is None and f is not None:
            q = f / ratio
        elif f is None:
            f, q = typical
        if n not in f_ms or n not in q_ms:
            estimated.append(n)
        fl[n] = round(f if f is not None else 0.0, 6)
        q8[n] = round(q if q is not None else 0.0, 6)
    return LayerTimes(fl, q8, tuple(estimated))


def _cache_path(float_model: Path, qdq_model: Path, layers: Sequence[str], threads: int,
                runs: int, extra: Mapping[str, Any] | None) -> Path | None:
    if extra is None:
        return None
    import onnxruntime

    from converters._machine import cpu_name

    h = hashlib.sha256()
    for p in (float_model, qdq_model):
        h.update(p.read_bytes())
    key = json.dumps({"v": CACHE_VERSION, "models": h.hexdigest(), "layers": list(layers),
                      "ort": onnxruntime.__version__, "cpu": cpu_name(), "threads": threads,
                      "runs": runs, **extra}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return edgeops_home() / "cache" / "perf" / f"layers-{digest}.json"
