"""The builders benchmarks/converter_zoo.py compares, each in a fresh process of its own.

Why a process per build: the build's peak memory is that process's peak RSS (imports included,
the same for every tool: ONNX Runtime's quantiser and edgeops here, NNCF in its venv through
benchmarks/_nncf.py), and a builder that crashes the interpreter becomes a row saying so
instead of ending the run. ``build_s`` is the build alone, imports excluded.

* :func:`ort_child`: ``quantize_static``, QDQ, per-channel, MinMax; ``stock`` keeps its default
  types (signed int8 activations and weights, S8S8), ``tuned`` is the stock quantiser's best
  x86 settings: ``quant_pre_process`` (symbolic shape inference and ORT's graph optimisation,
  skipped with a note when it fails), uint8 activations and int8 weights (u8s8, the pair ORT's
  x86 kernels run fastest).
* :func:`ours_child`: ``converters.build.build`` for one target and effort (``edgeops build``),
  its gate at the request's budget; with ``exact`` its validation runs (the gate, the
  mixed-precision measurements) on :func:`exact_session`.

:func:`exact_session`: ONNX Runtime's exact U8U8 kernels (``session.x64quantprecision=1``).
On an x86 machine without VNNI the default u8s8 kernel (vpmaddubsw) saturates its int16 pair
sums, so an 8-bit-weight (``x86-cpu-vnni``) model computes there what no VNNI CPU computes;
the exact kernels compute what vpdpbusd does (converters/onnx_plan.build_machine_caveat), more
slowly: for accuracy only, never for timing.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from pathlib import Path
from typing import Any

from benchmarks._rss import peak_rss_mib

__all__ = ["exact_session", "in_child", "ort_child", "ours_child"]

EXACT_U8S8 = "session.x64quantprecision"


def exact_session(model: Path | bytes, providers: Any = ("CPUExecutionProvider",),
                  threads: int = 1) -> Any:
    """A CPU session whose u8s8 products are exact (what a VNNI CPU computes)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry(EXACT_U8S8, "1")
    return ort.InferenceSession(str(model) if isinstance(model, Path) else model, so,
                                providers=["CPUExecutionProvider"])


def _exact_validation() -> None:
    """This process's builds validate on :func:`exact_session` (the converter's timing
    sessions are left alone: they open their own)."""
    import converters.feeds
    import converters.validate

    converters.validate.open_session = exact_session
    converters.feeds.open_session = exact_session


class _Reader:
    def __init__(self, calibration: str) -> None:
        import numpy as np

        with np.load(calibration) as z:
            data = {k: z[k] for k in z.files}
        n = len(next(iter(data.values())))
        self._it = iter([{k: v[i:i + 1] for k, v in data.items()} for i in range(n)])

    def get_next(self) -> Any:
        return next(self._it, None)


def ort_child(src: str, calibration: str, out: str, tuned: bool) -> dict[str, Any]:
    """``src`` is already at opset >= 13 (what ``quantize_static`` needs)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    t0 = time.perf_counter()
    note = ""
    model = src
    if tuned:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = str(Path(out).with_suffix(".pre.onnx"))
        try:
            try:
                quant_pre_process(src, pre)
            except ImportError:        # its symbolic shape inference needs sympy
                quant_pre_process(src, pre, skip_symbolic_shape=True)
                note = "quant_pre_process without symbolic shape inference (no sympy)"
            model = pre
        except Exception as exc:       # noted in the row; the quantiser runs on the source
            note = (f"quant_pre_process failed ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:80] if str(exc) else ''}), skipped")
    kwargs: dict[str, Any] = {"quant_format": QuantFormat.QDQ, "per_channel": True,
                              "calibrate_method": CalibrationMethod.MinMax}
    if tuned:
        kwargs |= {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8}
    quantize_static(model, out, _Reader(calibration), **kwargs)
    return {"build_s": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib(),
            **({"note": note} if note else {})}


def ours_child(src: str, calibration: str, work: str, target: str, effort: str,
               options: dict[str, Any], input_shapes: dict[str, tuple[int, ...]],
               max_accuracy_drop: float, exact: bool = False) -> dict[str, Any]:
    """One ``edgeops build``: the artifact's path and what the manifest says of it, or the
    refusal (``refused``: the accuracy gate or a clear error) / failure (a converter bug)."""
    if exact:
        _exact_validation()
    from converters.api import BuildRequest
    from converters.build import build
    from edgeops.errors import EdgeOpsError

    req = BuildRequest(model=Path(src), name="zoo", version="1.0.0", targets=(target,),
                       calibration=Path(calibration), input_shapes=input_shapes,
                       max_accuracy_drop=max_accuracy_drop,
                       options={**options, "effort": effort})
    t0 = time.perf_counter()
    try:
        (art,) = build(req, lambda m: None, Path(work)).artifacts
    except EdgeOpsError as exc:
        return {"error": exc.diagnostics(), "refused": True,
                "build_s": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib()}
    except Exception as exc:           # a converter bug: recorded in the row
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                "build_s": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib()}
    d = art.details
    acc = art.metrics.get("accuracy", {})
    return {"build_s": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib(),
            "path": str(art.path), "precision": art.precision,
            "float_nodes": len(d.get("float_nodes", {})),
            "quantised_nodes": d.get("quantised_nodes"),
            "quantisation_passes": d.get("quantisation_passes"),
            "io_layout": d.get("io_layout"),
            "gate": {"metric": acc.get("gate_metric"), "drop": acc.get("drop"),
                     "budget": max_accuracy_drop},
            **({"pass": d["pass"]} if "pass" in d else {})}


def _call(conn: Any, fn: Any, args: tuple[Any, ...]) -> None:
    try:
        conn.send(fn(*args))
    except Exception as exc:            # ORT's quantiser raising: recorded in the row
        conn.send({"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                   if str(exc) else type(exc).__name__})


def in_child(fn: Any, *args: Any) -> dict[str, Any]:
    """``fn(*args)`` in a fresh spawned process; an exception, or a process that dies (the
    kernel's OOM killer ends it with SIGKILL), is an ``error``."""
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_call, args=(send, fn, args))
    proc.start()
    send.close()
    try:
        res: dict[str, Any] = recv.recv()
    except EOFError:                    # it died before answering
        proc.join()
        code = proc.exitcode
        why = ("killed by SIGKILL (out of memory? see dmesg)" if code == -signal.SIGKILL
               else f"killed by signal {-code}" if code is not None and code < 0
               else f"exited {code}")
        return {"error": f"the build process died: {why}"}
    proc.join()
    return res
