"""The build step that writes the drift reference into the manifest (edgeops/drift).

Why it exists apart from converters/build.py: it needs only the source model and data, no
backend, and keeping it here leaves build.py's data loading alone. It runs right after the FP32
reference, before any backend, so a bad ``--reference`` file fails before anything is written.

Which samples: ``--reference DATA`` when given; else the validation data (else the calibration
data) read again in full, up to :data:`MAX_DRIFT_REFERENCE_SAMPLES`, because the build keeps
only 200 validation samples for its accuracy metrics and a reference that small makes every
live window depend on the same few samples (docs/DRIFT.md, "False alarm rate"). None for
synthetic samples: a reference of random noise would make every live window "drift".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from converters.api import BuildRequest, ProgressFn
from converters.data import InputSpec, Preprocessing, SampleSet, load_samples
from converters.validate import run_onnx
from edgeops.drift.features import build_reference
from edgeops.drift.reference import DriftReference

__all__ = ["MAX_DRIFT_REFERENCE_SAMPLES", "drift_reference_for"]

MAX_DRIFT_REFERENCE_SAMPLES = 2000    # each is run once through the FP32 model at build time


def drift_reference_for(request: BuildRequest, model_path: Path, inputs: Sequence[InputSpec],
                        val: SampleSet, outputs: Mapping[str, np.ndarray], *, synthetic: bool,
                        preprocessing: Preprocessing | None = None,
                        progress: ProgressFn | None = None,
                        stateful: bool = False) -> DriftReference | None:
    """Bins and reference counts, from the samples named above and the model's FP32 outputs.

    A stream (``stateful``: its states carried from step to step) and data handed over as Python
    feed dicts are counted from the validation samples already loaded; only a file or folder is
    read again, for more samples than the build keeps.
    """
    explicit = request.options.get("drift_reference")
    named = request.validation if request.validation is not None else request.calibration
    path, source = ((Path(explicit), "reference") if explicit else
                    (None, "validation") if stateful or not isinstance(named, (str, Path)) else
                    (Path(named), "validation" if request.validation is not None
                     else "calibration"))
    if path is None:
        if synthetic or len(val) == 0:
            return None
        return build_reference(val.arrays, outputs, source="validation")
    values = {k: float(v) for k, v in (request.options.get("input_values") or {}).items()}
    samples = load_samples(path, inputs, what=source, preprocessing=preprocessing,
                           values=values)
    samples = samples.head(MAX_DRIFT_REFERENCE_SAMPLES)
    if len(samples) <= len(val) and source != "reference":
        return build_reference(val.arrays, outputs, source=source)     # nothing more to read
    if progress is not None:
        progress(f"drift reference: FP32 outputs on {len(samples)} {source} samples")
    return build_reference(samples.arrays, run_onnx(model_path, samples, threads=request.threads),
                           source=source)
