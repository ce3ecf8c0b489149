"""Streaming calibration: activation ranges from many samples in bounded memory.

ONNX Runtime's calibrators keep every intermediate output of every sample they are fed before
reducing them. Fed the whole calibration set at once, that is (samples x activations) floats
and blows up on large models. Here the set is fed in chunks of ``CHUNK_SAMPLES``; after each
chunk the calibrator reduces to ranges (MinMax) or merges into its histograms (Entropy,
Percentile) and drops the raw activations, so peak memory is one chunk's activations.
The ranges are saved as ONNX Runtime's calibration cache, so the several quantisations one
build tries (performance- and accuracy-aware passes) calibrate only once.
A model kept with external data (over 2 GB) gets its augmented copy written the same way, in a
scratch folder of its own that is removed afterwards.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from converters.feeds import Samples
from edgeops.errors import ConversionError

__all__ = ["CHUNK_SAMPLES", "METHODS", "calibrate", "calibrated_ranges"]

CHUNK_SAMPLES = 16
PERCENTILE = 99.999


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


METHODS = ("minmax", "entropy", "percentile")


class _ChunkReader:
    """A CalibrationDataReader over the next ``size`` samples of one pass, one at a time."""

    def __init__(self, samples: Iterator[dict[str, np.ndarray]], size: int) -> None:
        self._samples, self._left = samples, size

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._left <= 0:
            return None
        self._left -= 1
        return next(self._samples, None)

    def __len__(self) -> int:
        return self._left


def calibrate(model_path: Path, samples: Samples, method: str, workdir: Path,
              *, symmetric: bool = False) -> tuple[Path, Any]:
    """Ranges for every tensor, saved as an ORT calibration cache; returns (cache, method)."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    cal_method = _method(method)
    extra: dict[str, Any] = {"symmetric": symmetric}
    if method == "percentile":
        extra["percentile"] = PERCENTILE
    from converters.onnx_utils import has_external_data

    scratch = workdir / "calibration-augmented"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        calibrator = create_calibrator(Path(model_path), None,
                                       augmented_model_path=str(scratch / "augmented.onnx"),
                                       calibrate_method=cal_method, extra_options=extra,
                                       use_external_data_format=has_external_data(model_path))
        with contextlib.redirect_stdout(io.StringIO()):  # ORT prints progress on stdout
            # One pass, in order (a sequence's samples carry state from step to step).
            stream = samples.iter_samples()
            for start in range(0, len(samples), CHUNK_SAMPLES):
                calibrator.collect_data(_ChunkReader(stream, min(CHUNK_SAMPLES,
                                                                 len(samples) - start)))
            ranges = calibrator.compute_data()
    except ValueError as exc:
        raise ConversionError(f"calibration failed: {exc}",
                              hint="check the calibration data (--calibration)") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    cache = workdir / f"calibration-{method}.json"
    save_tensors_data(ranges, cache)
    return cache, cal_method


def calibrated_ranges(cache: Path) -> dict[str, tuple[float, float]]:
    """(min, max) per tensor from an ORT calibration cache."""
    import numpy as np
    from onnxruntime.quantization.calibrate import load_tensors_data

    out = {}
    for name, td in load_tensors_data(cache).items():
        lo, hi = td.range_value
        out[name] = (float(np.ravel(lo)[0]), float(np.ravel(hi)[0]))
    return out
