"""Where a full-integer DBNet loses its mask IoU, and what 16-bit activations would buy (issue 16).

    python -m benchmarks.converter_tflite --fullint-localise [MODEL] [--zoo-int8-samples N]

The zoo's full-integer detector builds (``_tflite_zoo_int8.py``) miss the 0.85 mask-IoU goal;
this bench says where the loss is, on the same windows, by simulation in LiteRT: the float
TFLite graph of the ``--effort fast`` candidate (MinMax ranges, plain int8 weights) with
QUANTIZE/DEQUANTIZE pairs inserted after chosen ops (the int8 artifact's own scales, or a
symmetric int16 scale over the same MinMax range) and weights rounded as the writer rounds them
(per tensor on Edge TPU, per channel on Ethos-U convolutions). Each row quantises one part and
leaves the rest float, so the parts can be compared; the real int8 artifact is scored beside.

Also measured: how far FP32 itself moves under invisible input noise (uniform, in 8-bit image
levels, through the model's normalisation), which is the resolution of the metric, and how much
the int8 artifact's score moves under the same noise (the spread between two builds that differ
by nothing that matters). Scores: mask IoU at the DB threshold (0.3) against FP32 in ONNX
Runtime, as the build's gate reads it. Simulated rows ignore kernel details (LiteRT's int8
HARD_SWISH and requantisation arithmetic), so they locate the loss; they do not promise a build.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = ["TARGETS", "localise", "markdown"]

TARGETS = {"edgetpu": False, "ethos-u": "conv-only"}      # target -> writer's per_channel
NOISE_LSB = (0.5, 1.0, 2.0)
_THRESHOLD = 0.3


# where an input can be clipped without changing the op's output: HARD_SWISH is 0 at and
# below -3 (one step of margin: the clipped value must dequantise at or below -3); the int8
# LOGISTIC (output scale 1/256, zero point -128) rounds to its extremes below -ln(511) and
# above ln(254.5 / 1.5)
_HSWISH_ZERO = (-3.0, None)
_SIGMOID_SATURATED = (-6.3, 5.2)


def _clipped(g: Any, ranges: dict[str, tuple[float, float]], kind: str,
             clip: tuple[float, float | None]) -> dict[str, tuple[float, float]]:
    """``ranges`` with every tensor read only by ``kind`` ops (as their data input) clipped;
    graph inputs and outputs keep theirs (the artifact's I/O contract)."""
    out = dict(ranges)
    for name, (lo, hi) in ranges.items():
        readers = list(g.consumers(name))
        if name in g.outputs or name in g.inputs or not readers or any(
                op.kind != kind or op.inputs[0] != name for op in readers):
            continue
        a, b = clip
        if kind == "HARD_SWISH":
            a -= (hi - a) / 254
        new = (max(lo, a), hi if b is None else min(hi, b))
        if new[1] > new[0]:
            out[name] = new
    return out


class _Samples:
    def __init__(self, data: dict[str, np.ndarray]) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(next(iter(self.data.values())))

    def iter_samples(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(self)):
            yield {k: v[i:i + 1] for k, v in self.data.items()}


def _iou(ref: np.ndarray, got: np.ndarray) -> float:
    from converters.tasks.masks import mask_score

    if got.shape != ref.shape:                        # NHWC artifact output
        got = got.transpose(0, 3, 1, 2)
    return float(mask_score(ref[:, 0], got[:, 0], _THRESHOLD).value)


def _run(model: bytes, low: Any, data: dict[str, np.ndarray]) -> np.ndarray:
    from converters.tflite._runtime import LiteRT

    rt = LiteRT(model)
    return np.concatenate([rt.run_float(f)[0] for f in low.feeds(_Samples(data).iter_samples())])


def _simulated(low: Any, qgraph: Any, weight_axis: Callable[[int, str], int | bool | None],
               act8: set[int], act16: set[int], ranges: dict[str, tuple[float, float]]) -> bytes:
    """The float graph with weights rounded (``weight_axis(k, kind)``: an axis, None for per
    tensor, False to keep float) and the outputs of ops ``act8`` / ``act16`` fake-quantised."""
    from converters.tflite._ir import Op, Quant
    from converters.tflite._quant import _WEIGHT_INPUT, _sym_quant
    from converters.tflite._writer import write_flatbuffer

    g = copy.deepcopy(low.graph)
    for k, op in enumerate(g.ops):
        i = _WEIGHT_INPUT.get(op.kind)
        w = g.tensors[op.inputs[i]].data if i is not None else None
        ax = weight_axis(k, op.kind)
        if i is None or w is None or ax is False:
            continue
        q, qu = _sym_quant(w, None if ax is None else int(ax))
        shape = [1] * w.ndim
        if ax is not None:
            shape[int(ax)] = -1
        op.inputs[i] = g.add_const(op.inputs[i] + "__sim",
                                   (q * qu.scale.reshape(shape)).astype(np.float32))
    ops = []
    for k, op in enumerate(g.ops):
        ops.append(op)
        for j, o in enumerate(op.outputs):
            qt = qgraph.tensors.get(o)
            if (k not in act8 and k not in act16) or qt is None or qt.quant is None \
                    or qt.dtype != "int8":
                continue
            pre = g.add_tensor(o + "__pre", g.tensors[o].shape)
            if k in act16:
                lo, hi = ranges.get(o, (-1.0, 1.0))
                s = max(abs(lo), abs(hi), 1e-6) / 32767
                mid = g.add_tensor(o + "__sim16", g.tensors[o].shape, "int16")
                g.tensors[mid].quant = Quant(np.array([s], np.float32), np.zeros(1, np.int64), 0)
            else:
                mid = g.add_tensor(o + "__sim8", g.tensors[o].shape, "int8")
                g.tensors[mid].quant = qt.quant
            op.outputs[j] = pre
            ops += [Op("QUANTIZE", [pre], [mid]), Op("DEQUANTIZE", [mid], [o])]
    g.ops = ops
    return write_flatbuffer(g)


def _noisy(x: np.ndarray, lsb: float, seed: int) -> np.ndarray:
    from tests.zoo_inputs import _STD

    std = np.asarray(_STD, np.float32).reshape(1, -1, 1, 1)
    rs = np.random.default_rng(seed)
    return (x + rs.uniform(-lsb, lsb, x.shape) / 255.0 / std).astype(np.float32)


def localise(name: str, samples: int | None = None, log: Callable[[str], None] = print
             ) -> dict[str, Any]:
    import onnx
    import onnxruntime as ort

    from benchmarks._tflite_zoo_int8 import _FILE, INT8_ZOO, _data
    from converters.tflite._quant import _CONV_OPS, _WEIGHT_INPUT, _weight_axis
    from converters.tflite.fullint import Candidates, FullIntPlan
    from tests.realzoo import model_path

    n = samples or INT8_ZOO[name][3]
    cal, val = _data(name, n)
    model = onnx.load(str(model_path(_FILE.get(name, name))))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def fp32(x: np.ndarray) -> np.ndarray:
        return np.concatenate([sess.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])

    ref = fp32(val["x"])
    out: dict[str, Any] = {"model": name, "samples": {"calibration": n, "validation": n},
                           "fp32_input_noise": {}, "targets": {}}
    noisy_refs = {}
    for lsb in NOISE_LSB:
        noisy_refs[lsb] = fp32(_noisy(val["x"], lsb, 0))
        out["fp32_input_noise"][str(lsb)] = _iou(ref, noisy_refs[lsb])
        log(f"  FP32 with +-{lsb} LSB input noise: {out['fp32_input_noise'][str(lsb)]:.4f}")
    shape = (1, *cal["x"].shape[1:])
    for target, pc in TARGETS.items():
        cands = Candidates(model, _Samples(cal), FullIntPlan(per_channel=pc, passes=()),
                           input_shapes={"x": shape}, require_static=True, target="tflite")
        (low,) = cands.lowered.values()          # no pass ran: one lowered graph
        art = cands.build("minmax", True)
        rng = cands.ranges["minmax"]
        ops = low.graph.ops
        every = set(range(len(ops)))
        hswish = {k for k, op in enumerate(ops) if op.kind == "HARD_SWISH"}
        weighted = [k for k, op in enumerate(ops) if op.kind in _WEIGHT_INPUT]
        stem = set(range(weighted[2] + 1)) - hswish

        def axis(k: int, kind: str, pc: bool | str = pc) -> int | None:
            per = (pc is True or (pc == "conv-only" and kind in _CONV_OPS)) \
                and kind != "FULLY_CONNECTED"
            return _weight_axis(kind) if per else None

        def sim(weights: Callable[[int, str], int | bool | None], act8: set[int],
                act16: frozenset[int] | set[int] = frozenset(), data: dict[str, np.ndarray] = val,
                reference: np.ndarray = ref, low: Any = low, art: Any = art,
                rng: Any = rng) -> float:
            return _iou(reference, _run(_simulated(low, art.graph, weights, act8, act16, rng),
                                        low, data))

        def none(k: int, kind: str) -> bool:
            return False

        row: dict[str, Any] = {"int8_artifact": _iou(ref, _run(art.model, low, val))}
        # two range changes that are exact in real arithmetic: how far such a change moves
        # the score is the resolution at which builds can be ranked
        for label, kind, clip in (("hard_swish_inputs_clamped", "HARD_SWISH", _HSWISH_ZERO),
                                  ("sigmoid_input_clipped", "LOGISTIC", _SIGMOID_SATURATED)):
            cands.ranges[label] = _clipped(low.graph, rng, kind, clip)
            row[f"int8_artifact_{label}"] = _iou(ref, _run(cands.build(label, True).model,
                                                           low, val))
        row["int8_artifact_input_noise_0.5"] = [
            _iou(fp32(x), _run(art.model, low, {"x": x}))
            for x in (_noisy(val["x"], 0.5, s) for s in (1, 2, 3))]
        q = len(ops) // 4
        rows: list[tuple[str, Callable[[int, str], int | bool | None], set[int], set[int]]] = [
            ("weights only", axis, set(), set()),
            ("activations only", none, every, set()),
            ("weights and activations", axis, every, set()),
            *((f"activations of ops [{a * q}:{(a + 1) * q if a < 3 else len(ops)}] only", none,
               set(range(a * q, (a + 1) * q if a < 3 else len(ops))), set()) for a in range(4)),
            ("16-bit activations everywhere, int8 weights", axis, set(), every),
            ("16-bit activations except HARD_SWISH outputs (int8)", axis, hswish,
             every - hswish),
            (f"16-bit activations on the stem only (ops {sorted(stem)}), int8 elsewhere",
             axis, every - stem, stem),
        ]
        row["simulated"] = {}
        for label, w, a8, a16 in rows:
            row["simulated"][label] = sim(w, a8, a16)
            log(f"  {target} {label}: {row['simulated'][label]:.4f}")
        row["stem_ops"] = [f"{ops[k].kind} {ops[k].source or ops[k].outputs[0]}"
                           for k in sorted(stem)]
        if pc is False:             # which per-tensor weights cost the most, one layer at a time
            cost = []
            for k in weighted:
                op = ops[k]
                w = low.graph.tensors[op.inputs[_WEIGHT_INPUT[op.kind]]].data
                assert w is not None
                ax = _weight_axis(op.kind)
                amax = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != ax))
                per_ch = {kk for kk in weighted if kk != k}
                v = sim(lambda kk, kind, per_ch=per_ch: _weight_axis(kind)
                        if kk in per_ch else None, set())
                cost.append({"op": f"{op.kind} {op.source}", "iou": v,
                             "channel_max_over_median": float(amax.max() / np.median(amax))})
            base = sim(lambda kk, kind: _weight_axis(kind), set())
            row["per_channel_weights_only"] = base
            row["per_tensor_cost_by_layer"] = sorted(cost, key=lambda c: c["iou"])[:8]
        out["targets"][target] = row
    return out


def markdown(res: dict[str, Any], machine: dict[str, Any]) -> str:
    t = res["targets"]
    lines = [f"## Where full-integer {res['model']} loses its mask IoU (issue 16, fullintdbnet)",
             "", f"{machine['processor']}, {machine['cpus']} CPUs (shared), {machine['litert']}, "
             f"onnxruntime {machine['onnxruntime']}; LiteRT 1 thread; load average "
             f"{machine['load_before']} -> {machine['load_after']}. "
             f"{res['samples']['calibration']}/{res['samples']['validation']} distinct windows "
             "(calibration/validation, as `--zoo-int8`). Mask IoU at 0.3 vs FP32 in ONNX "
             "Runtime. `--effort fast` candidate: MinMax ranges, plain int8 weights.", "",
             "FP32 against itself with uniform input noise of +-N 8-bit image levels "
             "(invisible): " + ", ".join(f"+-{k} LSB {v:.4f}"
                                          for k, v in res["fp32_input_noise"].items()), "",
             "| what is quantised (the rest float) | edgetpu (per-tensor weights) | "
             "ethos-u (per-channel conv weights) |", "|---|---|---|",
             f"| int8 artifact (real, LiteRT) | {t['edgetpu']['int8_artifact']:.4f} | "
             f"{t['ethos-u']['int8_artifact']:.4f} |",
             "| int8 artifact, HARD_SWISH inputs clamped at -3 (exact) | "
             f"{t['edgetpu']['int8_artifact_hard_swish_inputs_clamped']:.4f} | "
             f"{t['ethos-u']['int8_artifact_hard_swish_inputs_clamped']:.4f} |",
             "| int8 artifact, sigmoid input clipped to where its int8 output saturates | "
             f"{t['edgetpu']['int8_artifact_sigmoid_input_clipped']:.4f} | "
             f"{t['ethos-u']['int8_artifact_sigmoid_input_clipped']:.4f} |",
             "| int8 artifact, inputs +-0.5 LSB noise (3 seeds, vs FP32 on the same) | "
             + " | ".join(", ".join(f"{v:.4f}" for v in t[k]["int8_artifact_input_noise_0.5"])
                          for k in ("edgetpu", "ethos-u")) + " |"]
    for label in t["edgetpu"]["simulated"]:
        lines.append(f"| simulated: {label} | {t['edgetpu']['simulated'][label]:.4f} | "
                     f"{t['ethos-u']['simulated'][label]:.4f} |")
    e = t["edgetpu"]
    lines += ["", "Stem (16-bit rows): " + ", ".join(t["ethos-u"]["stem_ops"]) + ".", "",
              f"Edge TPU weights one layer at a time (activations float): every layer per "
              f"channel {e['per_channel_weights_only']:.4f}; with only this layer per tensor:"]
    lines += [f"* {c['op']}: {c['iou']:.4f} (largest channel max / median "
              f"{c['channel_max_over_median']:.0f})" for c in e["per_tensor_cost_by_layer"]]
    return "\n".join(lines) + "\n"
