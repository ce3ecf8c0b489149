"""Issue 16's goals, checked against a benchmarks/converter_zoo.py result (pure, no I/O).

Why its own module: the goals are the point of the table, so they are computed from the
measured rows, never typed in, and unit-tested (tests/benchmarks/test_converter_zoo.py).
Each goal reads "ours, default settings": the ``default`` effort, for both x86 targets (the
8-bit ``x86-cpu-vnni`` build this VNNI machine runs, and the 7-bit ``x86-cpu`` build non-VNNI
CPUs need), each checked on its own. No noise allowance is applied: the speed figures are
interleaved medians of one run, printed beside every verdict. One exception: an artifact that
is the source byte for byte (``same_as_source``, by sha256: a pre-quantised model passed
through) is FP32's own model, so its speed is 1.0x by definition and the measured gap is noise:
"never slower than FP32" is met, and against the stock quantiser it counts as 1.0x.

The hard classes are named by the zoo model that stands for them (this is a benchmark: it may
name models; product code may not): the DBNet text detector at 640x640 (``ocr-det-640``), the
CTC recogniser (``ocr-rec``), the YOLO detector (``yolov8-doc``), and for the full-integer
targets the hard-swish classifier (``ocr-cls``) and the DBNet detector.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FULLINT_TARGETS", "GOALS", "OURS_DEFAULT", "GoalCheck", "Threshold", "check_goals",
           "figures", "refused"]

OURS_DEFAULT = ("edgeops-vnni-default", "edgeops-x86-default")
FULLINT_TARGETS = ("edgetpu", "ethos-u")
STOCK = "ort-stock"


@dataclass(frozen=True)
class GoalCheck:
    """One verdict: ``met`` is None when the rows needed were not measured in this result."""

    goal: str
    subject: str          # model / variant
    met: bool | None
    figures: str


@dataclass(frozen=True)
class Threshold:
    """A hard-class goal: figures at or above ``floors`` (by figure name), at a speed-up of at
    least ``speedup`` (None: the target has no speed goal, a full-integer NPU build)."""

    goal: str
    models: tuple[str, ...]
    variants: tuple[str, ...]
    floors: Mapping[str, float]
    speedup: float | None


GOALS: tuple[Threshold, ...] = (
    Threshold("DBNet text detector: mask IoU >= 0.90 at >= 1.3x", ("ocr-det-640",),
              OURS_DEFAULT, {"mask_iou": 0.90}, 1.3),
    Threshold("DBNet text detector (stretch): mask IoU >= 0.95 at >= 1.6x", ("ocr-det-640",),
              OURS_DEFAULT, {"mask_iou": 0.95}, 1.6),
    Threshold("CTC recogniser: argmax agreement >= 0.995 at >= 1.3x", ("ocr-rec",),
              OURS_DEFAULT, {"argmax_agreement": 0.995}, 1.3),
    Threshold("YOLO detector: class-score cosine >= 0.97 and detection F1 >= 0.98 at >= 1.8x, "
              "no hand-written exclusions", ("yolov8-doc",), OURS_DEFAULT,
              {"class_score_cosine": 0.97, "detection_f1": 0.98}, 1.8),
    Threshold("full-integer Edge TPU / Ethos-U, hard-swish classifier: top-1 agreement >= 0.97",
              ("ocr-cls",), tuple(f"edgeops-{t}-default" for t in FULLINT_TARGETS),
              {"top1_agreement": 0.97}, None),
    Threshold("full-integer Edge TPU / Ethos-U, DBNet detector: mask IoU >= 0.85",
              ("ocr-det-640",), tuple(f"edgeops-{t}-default" for t in FULLINT_TARGETS),
              {"mask_iou": 0.85}, None),
)


def figures(v: Mapping[str, Any]) -> dict[str, float]:
    """The figures a user checks, by name, from one variant's row: the task metric the gate
    reads and what else that metric measured (per-timestep argmax agreement and CER for a CTC
    recogniser, class-score cosine for a dense detection head)."""
    out: dict[str, float] = {}
    if "task_value" in v:
        out[str(v["task_metric"])] = float(v["task_value"])
    for k in ("argmax_agreement", "class_score_cosine", "cer"):
        if k in v.get("task_details", {}):
            out[k] = float(v["task_details"][k])
    return out


def refused(v: Mapping[str, Any]) -> bool:
    """A clear refusal (the gate, bad input), as opposed to a crash; rows written before the
    flag existed say it by their message (the gate's "... dropped ...")."""
    return bool(v.get("refused")) or " dropped " in str(v.get("error", ""))


def _why_not(v: Mapping[str, Any] | None) -> str | None:
    """Why a row has nothing to check, or None when it was measured."""
    if v is None:
        return "not measured in this result"
    if "error" in v:
        return ("refused: " if refused(v) else "failed: ") + str(v["error"]).split(
            "; most sensitive")[0].split("; limited by")[0][:160]
    if "task_value" not in v:
        return "no task metric"
    return None


def _fmt(fig: Mapping[str, float], speed: float | None) -> str:
    parts = [f"{k} {val:.4f}" for k, val in fig.items() if k != "cer"]
    return ", ".join(parts) + ("" if speed is None else f" at {speed:.2f}x")


def _speed(v: Mapping[str, Any]) -> float | None:
    """The speed-up a goal reads: 1.0 for the source byte for byte (the gap is noise)."""
    s = v.get("speedup_vs_fp32")
    return 1.0 if v.get("same_as_source") and s is not None else s


def _never_slower(name: str, key: str, v: Mapping[str, Any]) -> GoalCheck:
    s = v.get("speedup_vs_fp32")
    q = v.get("speedup_quartiles")
    noise = f" (round ratios {q[0]:.2f}-{q[1]:.2f})" if q else ""
    if v.get("same_as_source") and s is not None:
        return GoalCheck("never slower than FP32", f"{name} / {key}", True,
                         f"same model as FP32 (the artifact is the source byte for byte); "
                         f"measured {s:.2f}x{noise}, noise")
    return GoalCheck("never slower than FP32", f"{name} / {key}",
                     None if s is None else bool(s >= 1.0),
                     "no latency" if s is None else f"{s:.2f}x FP32{noise}")


def _vs_stock(name: str, key: str, v: Mapping[str, Any], stock: Mapping[str, Any] | None
              ) -> GoalCheck:
    goal = "not below ORT stock on speed nor on the task metric"
    why = _why_not(stock)
    if why is not None:
        return GoalCheck(goal, f"{name} / {key}", None, f"ORT stock: {why}")
    assert stock is not None
    ours_s, st_s = _speed(v), stock.get("speedup_vs_fp32")
    if ours_s is None or st_s is None:
        return GoalCheck(goal, f"{name} / {key}", None, "no latency")
    metric = str(v["task_metric"])
    ok_speed = ours_s >= st_s
    ok_metric = v["task_value"] >= stock["task_value"]
    missed = [w for w, ok in (("speed", ok_speed), ("metric", ok_metric)) if not ok]
    return GoalCheck(goal, f"{name} / {key}", not missed,
                     f"{metric} {v['task_value']:.4f} vs {stock['task_value']:.4f}, "
                     f"{ours_s:.2f}x vs {st_s:.2f}x"
                     + (f" (below on {' and '.join(missed)})" if missed else ""))


def _threshold(g: Threshold, name: str, key: str, v: Mapping[str, Any]) -> GoalCheck:
    fig = figures(v)
    speed = v.get("speedup_vs_fp32") if g.speedup is not None else None
    if g.speedup is not None and speed is None:
        return GoalCheck(g.goal, f"{name} / {key}", None, "no latency")
    lacking = [k for k in g.floors if k not in fig]
    if lacking:
        return GoalCheck(g.goal, f"{name} / {key}", None,
                         f"{', '.join(lacking)} not measured ({_fmt(fig, speed)})")
    ok = all(fig[k] >= floor for k, floor in g.floors.items()) and (
        g.speedup is None or (speed is not None and speed >= g.speedup))
    return GoalCheck(g.goal, f"{name} / {key}", ok, _fmt(fig, speed))


def check_goals(result: Mapping[str, Any],
                variants_of: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
                ) -> list[GoalCheck]:
    """Every goal of issue 16 that the result's models and rows allow checking, in order:
    the two every-model goals, then the hard classes (a row that is missing, refused or failed
    is a miss with its reason when the model was measured, not a pass)."""
    rows = variants_of or (lambda e: e.get("variants", {}))
    out: list[GoalCheck] = []
    models = result.get("models", {})
    for name, e in models.items():
        vs = rows(e)
        for key in OURS_DEFAULT:
            v = vs.get(key)
            why = _why_not(v)
            if why is not None:
                if v is not None:
                    out.append(GoalCheck("never slower than FP32", f"{name} / {key}", False,
                                         why))
                continue
            assert v is not None
            out.append(_never_slower(name, key, v))
            out.append(_vs_stock(name, key, v, vs.get(STOCK)))
    for g in GOALS:
        for name in g.models:
            if name not in models:
                out.append(GoalCheck(g.goal, name, None, "model not in this result"))
                continue
            vs = rows(models[name])
            for key in g.variants:
                v = vs.get(key)
                why = _why_not(v)
                if why is not None:
                    out.append(GoalCheck(g.goal, f"{name} / {key}",
                                         None if v is None else False, why))
                    continue
                assert v is not None
                out.append(_threshold(g, name, key, v))
    return out
