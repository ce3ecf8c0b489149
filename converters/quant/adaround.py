"""Weight rounding optimised on calibration data (AdaRound, Nagel et al. 2020), in numpy.

Round-to-nearest is the best rounding of each weight alone, not of a layer's output: errors of
neighbouring weights that multiply correlated inputs add up. AdaRound picks, per weight, floor
or ceil on the quantiser's grid to minimise the layer's output error ``tr(dW H dW^T)``
(``H``: the second moment of the layer's FP32 inputs, :mod:`converters.quant._gram`), relaxed
to a continuous ``h(V)`` in [0, 1] pushed to 0/1 by an annealed regulariser, optimised with
Adam, then rounded hard. No torch: the loss and its gradient are a few matrix products.

The grid must be exactly the quantiser's; by default ONNX Runtime's: per-channel symmetric
int8 with scale ``s = float32(2 * max|w| / (qmax - qmin))`` (``qmax - qmin`` = 254, or 128 for
7-bit ``reduce_range`` weights; onnxruntime/quantization/quant_utils.py ``compute_scale_zp``);
the full-integer TFLite path passes its writer's grid instead (:class:`WeightGrid`). Each
channel (each tensor, on a per-tensor grid) keeps its largest-magnitude weight unchanged (so
the quantiser derives the same ``s``) and every other weight is written back as the float
``s * q``: the quantiser's round-to-nearest then reproduces ``q``. The FP32 model is changed
on purpose, like bias correction; a layer kept float later gets its original weights back
(:meth:`AdaRound.restore`), and bias correction measures the shift from the original weights
(:attr:`AdaRound.originals`).

Budgets are deterministic (same inputs, same artifact): the per-layer and per-pass time
budgets become iteration counts through an assumed matrix-product speed
(:attr:`AdaRoundSettings.nominal_gflops`), never through the clock; the report records the
wall time each layer actually took. A layer whose hard rounding does not beat
round-to-nearest on its own calibration loss keeps round-to-nearest.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from converters.quant._gram import Layer, accumulate, layers
from converters.quant._graph import Graph
from converters.quant._stats import head_samples
from converters.quant.base import PassOutcome, setting

__all__ = ["AdaRound", "AdaRoundSettings", "Grid", "OrtGrid", "Rounded", "WeightGrid",
           "blas_threads", "grid", "low_rank", "on_grid", "optimise_rounding",
           "reconstruction_error"]

ZETA, GAMMA = 1.1, -0.1


@dataclass(frozen=True)
class AdaRoundSettings:
    reduce_range: bool = setting(False, "weights use 7 bits (x86 without VNNI), as the plan says")
    samples: int = setting(16, "calibration samples that H is accumulated over (from the start)")
    max_positions: int = setting(4096, "output positions per sample and layer feeding H "
                                       "(drawn with a fixed seed when there are more)")
    max_patch_mb: float = setting(32.0, "im2col columns of one layer and sample, MiB; fewer "
                                        "positions are drawn where they would pass it (wide "
                                        "depthwise layers)")
    max_h_mb: float = setting(64.0, "largest H (float64, all groups) of one layer, MiB; a "
                                    "larger layer keeps round-to-nearest")
    max_total_h_mb: float = setting(512.0, "all layers' H together, MiB; layers past it (graph "
                                           "order) keep round-to-nearest")
    iterations: int = setting(500, "Adam iterations per layer (fewer when the budget says so)")
    min_iterations: int = setting(100, "a layer that cannot get this many within its budget "
                                       "keeps round-to-nearest")
    layer_seconds: float = setting(20.0, "budget of one layer's optimisation (at nominal_gflops)")
    pass_seconds: float = setting(600.0, "budget of all layers' optimisation (at nominal_gflops)")
    nominal_gflops: float = setting(4.0, "assumed float64 matrix-product speed turning the "
                                         "budgets into iteration counts (deterministic)")
    h_energy: float = setting(0.9999, "share of H's trace its low-rank factor keeps in the "
                                      "optimisation loop (the final choice against "
                                      "round-to-nearest uses the full H)")
    learning_rate: float = setting(0.02, "Adam step size on V")
    regulariser: float = setting(5.0, "lambda: weight of the round-to-0/1 regulariser (its mean "
                                      "over weights; the loss is relative to round-to-nearest)")
    beta: tuple[float, float] = setting((20.0, 2.0), "regulariser exponent, annealed from the "
                                                     "first to the second")
    warmup: float = setting(0.2, "fraction of iterations without the regulariser")
    seed: int = setting(0, "seed of the position sampling")
    blas_threads: int = setting(1, "numpy BLAS threads while the pass runs (threadpoolctl): "
                                   "bounded as the engine's ONNX Runtime sessions are (1 "
                                   "thread), so a build does not take every core of a shared "
                                   "machine (OpenBLAS starts one thread per core)")

    def __post_init__(self) -> None:
        if self.blas_threads < 1:
            raise ValueError(f"blas_threads must be at least 1, got {self.blas_threads}")


def blas_threads(n: int) -> AbstractContextManager[Any]:
    """numpy's BLAS on at most ``n`` threads inside the block (restored on leaving it)."""
    from threadpoolctl import threadpool_limits

    limits: AbstractContextManager[Any] = threadpool_limits(limits=n, user_api="blas")
    return limits


@dataclass(frozen=True)
class Grid:
    """One weight matrix ``[outputs, K]`` on the quantiser's grid (one scale per row; a
    per-tensor grid repeats its one scale)."""

    scale: np.ndarray        # [outputs] float32, the quantiser's
    qmax: int
    fixed: np.ndarray        # bool [outputs, K]: weights that must keep their value (max |w|)


class WeightGrid(Protocol):
    """The quantiser's weight grid that AdaRound rounds onto: the integers it chooses are only
    worth anything if the quantiser that writes the artifact derives the same scales and
    reproduces them. :class:`OrtGrid` (ONNX Runtime's) by default; the full-integer TFLite
    path passes its writer's (converters/tflite/_rounding.py)."""

    @property
    def label(self) -> str:
        """The grid, as the pass's report names it."""
        ...

    def grid(self, layer: Layer, w: np.ndarray) -> Grid:
        """Scales and fixed weights for ``w``, the layer's weight as ``[outputs, K]``."""
        ...

    def on_grid(self, layer: Layer, w: np.ndarray, q: np.ndarray, g: Grid) -> np.ndarray:
        """Float32 ``[outputs, K]`` weights the quantiser turns into exactly ``q`` (with
        ``g``'s scales); raises ArithmeticError when it cannot."""
        ...


@dataclass(frozen=True)
class OrtGrid:
    """ONNX Runtime's per-channel symmetric grid (:func:`grid`, :func:`on_grid`)."""

    reduce_range: bool = False

    @property
    def label(self) -> str:
        return "7-bit" if self.reduce_range else "8-bit"

    def grid(self, layer: Layer, w: np.ndarray) -> Grid:
        return grid(w, self.reduce_range)

    def on_grid(self, layer: Layer, w: np.ndarray, q: np.ndarray, g: Grid) -> np.ndarray:
        return on_grid(w, q, g)


def grid(w: np.ndarray, reduce_range: bool) -> Grid:
    """ORT's symmetric per-channel int8 scales for rows of ``w`` (float32)."""
    qrange = 128.0 if reduce_range else 254.0
    absmax = np.abs(w).max(axis=1)
    scale = (2.0 * absmax.astype(np.float64) / qrange).astype(np.float32)
    scale = np.where(scale < np.finfo(np.float32).tiny, np.float32(1.0), scale)
    return Grid(scale, 64 if reduce_range else 127, np.abs(w) == absmax[:, None])


def _rtn(w: np.ndarray, g: Grid) -> np.ndarray:
    """ORT's own rounding: float32 division, round half to even."""
    q: np.ndarray = np.clip(np.round(w.astype(np.float32) / g.scale[:, None]), -g.qmax, g.qmax)
    return q


def reconstruction_error(dw: np.ndarray, h: np.ndarray) -> float:
    """``tr(dW H dW^T)`` summed over groups (``dw`` [outputs, K], ``h`` [groups, K, K])."""
    d = dw.reshape(h.shape[0], -1, h.shape[1])
    return float(np.sum(np.matmul(d, h) * d))


def _h(v: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.clip(1.0 / (1.0 + np.exp(-v)) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)
    return out


def low_rank(h: np.ndarray, energy: float) -> np.ndarray | None:
    """``F`` [groups, K, r] with ``F F^T`` keeping ``energy`` of ``H``'s trace, when that
    halves the work of each iteration (``H`` from few columns, as in deep layers); else None."""
    k = h.shape[1]
    if k < 64:
        return None
    vals, vecs = np.linalg.eigh(h)                                 # ascending
    vals = np.clip(vals, 0.0, None)
    share = np.cumsum(vals[:, ::-1], axis=1) / np.maximum(vals.sum(1, keepdims=True), 1e-300)
    r = int(max(1, (share < energy).sum(1).max() + 1))
    if 2 * r >= k:
        return None
    top = vecs[:, :, ::-1][:, :, :r] * np.sqrt(vals[:, ::-1][:, None, :r])
    return np.ascontiguousarray(top)


def optimise_rounding(w: np.ndarray, h: np.ndarray, g: Grid, iterations: int,
                      s: AdaRoundSettings, factor: np.ndarray | None = None) -> np.ndarray:
    """AdaRound's integers ``q`` [outputs, K] for float32 ``w`` (fixed weights: ORT's);
    ``factor`` (from :func:`low_rank`) stands in for ``h`` in the loop when given."""
    w64 = w.astype(np.float64)
    sc = g.scale.astype(np.float64)[:, None]
    base = np.floor(w64 / sc)
    rest = np.clip(w64 / sc - base, 1e-4, 1 - 1e-4)
    sig = (rest - GAMMA) / (ZETA - GAMMA)
    v = np.log(sig / (1 - sig))
    free = ~g.fixed
    groups, k = h.shape[0], h.shape[1]
    norm = max(reconstruction_error((_rtn(w, g) * sc) - w64, h), 1e-30)
    # float32 products in the loop (the gradient need not be exact; the errors reported and
    # compared are float64)
    h32 = h.astype(np.float32)
    f32 = None if factor is None else factor.astype(np.float32)
    m = np.zeros_like(v)
    u = np.zeros_like(v)
    b1, b2, eps = 0.9, 0.999, 1e-8
    warm = int(iterations * s.warmup)
    for t in range(1, iterations + 1):
        sg = 1.0 / (1.0 + np.exp(-v))
        raw = sg * (ZETA - GAMMA) + GAMMA
        hv = np.clip(raw, 0.0, 1.0)
        dh = np.where((raw > 0) & (raw < 1), sg * (1 - sg) * (ZETA - GAMMA), 0.0)
        dw = sc * (base + hv) - w64
        d = dw.reshape(groups, -1, k).astype(np.float32)
        dh_ = (np.matmul(np.matmul(d, f32), f32.transpose(0, 2, 1)) if f32 is not None
               else np.matmul(d, h32))
        grad = (2.0 / norm) * dh_.reshape(dw.shape) * sc
        if t > warm:
            frac = (t - warm) / max(1, iterations - warm)
            beta = s.beta[0] + (s.beta[1] - s.beta[0]) * frac
            c = 2 * hv - 1
            grad = grad - (s.regulariser / v.size) * beta * np.abs(c) ** (beta - 1) \
                * np.sign(c) * 2
        grad = grad * dh * free
        m = b1 * m + (1 - b1) * grad
        u = b2 * u + (1 - b2) * grad * grad
        v = v - s.learning_rate * (m / (1 - b1 ** t)) / (np.sqrt(u / (1 - b2 ** t)) + eps)
    q = base + (_h(v) > 0.5)
    out: np.ndarray = np.clip(np.where(g.fixed, _rtn(w, g), q), -g.qmax, g.qmax)
    return out


def on_grid(w: np.ndarray, q: np.ndarray, g: Grid) -> np.ndarray:
    """Float32 weights that ORT quantises to exactly ``q`` with the same scales as ``w``."""
    absmax = np.abs(w).max(axis=1, keepdims=True)
    out = (q * g.scale.astype(np.float64)[:, None]).astype(np.float32)
    out = np.clip(out, -absmax, absmax)       # never a new channel maximum
    out = np.where(g.fixed, w, out).astype(np.float32)
    if not np.array_equal(_rtn(out, grid(out, g.qmax == 64)), q) \
            or not np.array_equal(grid(out, g.qmax == 64).scale, g.scale):
        raise ArithmeticError("rounded weights do not reproduce their integers on ORT's grid")
    return out


@dataclass(frozen=True)
class Rounded:
    """A layer this pass re-rounded: its original weight and the integers it chose."""

    layer: Layer
    original: np.ndarray     # the FP32 weight, its own shape
    q: np.ndarray            # [outputs, K] integers on the quantiser's grid


class AdaRound:
    name = "adaround"

    def __init__(self, settings: AdaRoundSettings | None = None,
                 weight_grid: WeightGrid | None = None) -> None:
        """``weight_grid``: the quantiser's grid (ONNX Runtime's per-channel one by default,
        7-bit when ``settings.reduce_range``)."""
        self.settings = settings or AdaRoundSettings()
        self.weight_grid: WeightGrid = weight_grid or OrtGrid(self.settings.reduce_range)
        self.done: list[Rounded] = []

    @property
    def originals(self) -> dict[str, np.ndarray]:
        """``{weight initialiser: original FP32 value}`` of every layer this pass rounded."""
        return {d.layer.weight: d.original for d in self.done}

    def applies(self, model: Any) -> str | None:
        return None if layers(model)[0] else \
            "no Conv/Gemm/MatMul with a constant weight of its own to round"

    def run(self, model: Any, samples: Any) -> tuple[Any, PassOutcome]:
        with blas_threads(self.settings.blas_threads):
            return self._run(model, samples)

    def _run(self, model: Any, samples: Any) -> tuple[Any, PassOutcome]:
        import onnx

        s = self.settings
        m = onnx.ModelProto()
        m.CopyFrom(model)
        found, left = layers(m)
        skipped: dict[str, str] = {}
        chosen: list[Layer] = []
        total = 0.0
        for la in found:
            mb = la.h_bytes() / 2**20
            if mb > s.max_h_mb:
                skipped[la.node] = f"H needs {mb:.1f} MiB > max_h_mb {s.max_h_mb:g}"
            elif total + mb > s.max_total_h_mb:
                skipped[la.node] = f"all H together would pass max_total_h_mb {s.max_total_h_mb:g}"
            else:
                chosen.append(la)
                total += mb
        t0 = time.perf_counter()
        hs, seen = accumulate(m, chosen, head_samples(samples, s.samples), s.max_positions, s.seed,
                              int(s.max_patch_mb * 2**20))
        gram_s = time.perf_counter() - t0
        g = Graph(m)
        per_layer: dict[str, dict[str, Any]] = {}
        budget = s.pass_seconds * s.nominal_gflops * 1e9
        for la in chosen:
            h = hs[la.node]
            f = low_rank(h, s.h_energy)
            inner = la.k if f is None else 2 * f.shape[2]
            cost = 2.0 * la.outputs * la.k * inner + 12.0 * la.outputs * la.k
            iters = int(min(s.iterations, s.layer_seconds * s.nominal_gflops * 1e9 / cost,
                            budget / cost))
            if iters < s.min_iterations:
                skipped[la.node] = (f"{iters} iteration(s) fit the "
                                    f"{'pass' if budget / cost < s.min_iterations else 'layer'}"
                                    f" budget (< min_iterations {s.min_iterations})")
                continue
            budget -= iters * cost
            w0 = g.const(la.weight)
            assert w0 is not None
            w = la.matrix(w0.astype(np.float32))
            gr = self.weight_grid.grid(la, w)
            t1 = time.perf_counter()
            q_rtn = _rtn(w, gr)
            sc = gr.scale.astype(np.float64)[:, None]
            e_w = reconstruction_error(w.astype(np.float64), h)
            e_rtn = reconstruction_error(q_rtn * sc - w, h)
            q = optimise_rounding(w, h, gr, iters, s, f)
            e_ada = reconstruction_error(q * sc - w, h)
            kept = e_ada < e_rtn
            entry = {"iterations": iters, "h_rank": la.k if f is None else f.shape[2],
                     "rel_error_nearest": _g(e_rtn / max(e_w, 1e-30)),
                     "rel_error_adaround": _g(e_ada / max(e_w, 1e-30)),
                     "seconds": round(time.perf_counter() - t1, 2)}
            if not kept:
                per_layer[la.node] = {**entry, "kept": "nearest (AdaRound did not beat it)"}
                continue
            new = self.weight_grid.on_grid(la, w, q, gr)
            g.set_const(la.weight, la.unmatrix(new))
            self.done.append(Rounded(la, w0, q.astype(np.int8)))
            per_layer[la.node] = {**entry, "kept": "adaround"}
        gains = [v["rel_error_adaround"] / v["rel_error_nearest"] for v in per_layer.values()
                 if v["kept"] == "adaround" and v["rel_error_nearest"] > 0]
        detail = (f"{len(self.done)} of {len(found)} layer(s) re-rounded on {seen} sample(s)"
                  + (f", median error {np.median(gains):.2f}x round-to-nearest's" if gains
                     else "") + f"; {len(skipped)} kept round-to-nearest (budget/memory), "
                  f"{len(left)} not roundable")
        return m, PassOutcome(self.name, "applied" if self.done else "skipped", detail, {
            "layers": per_layer, "kept_nearest": dict(sorted(skipped.items())),
            "not_roundable": dict(sorted(left.items())), "samples": seen,
            "gram_seconds": round(gram_s, 2),
            "grid": self.weight_grid.label})

    def restore(self, model: Any, exclude: set[str]) -> bool:
        """Put back the original weights of rounded layers in ``exclude`` (in place)."""
        back = [d for d in self.done if d.layer.node in exclude]
        g = Graph(model)
        for d in back:
            g.set_const(d.layer.weight, d.original)
        return bool(back)

    def restore_file(self, model_path: Path, exclude: set[str], out: Path) -> Path:
        import onnx

        from converters.onnx_utils import save_model

        if not any(d.layer.node in exclude for d in self.done):
            return model_path
        m = onnx.load(str(model_path))
        self.restore(m, exclude)
        return save_model(m, out)


def _g(x: float) -> float:
    return float(f"{x:.4g}")
