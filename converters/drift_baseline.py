"""The build step that writes the drift reference into the manifest (edgeops/drift).

Why it exists apart from converters/build.py: the reference is computed from data the build
already holds (the validation samples and the FP32 outputs on them), so it needs no backend and
no extra run of the model; keeping it here leaves build.py's data loading alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from converters.data import SampleSet
from edgeops.drift.features import build_reference
from edgeops.drift.reference import DriftReference

__all__ = ["drift_reference_for"]


def drift_reference_for(samples: SampleSet, outputs: Mapping[str, np.ndarray], *,
                        synthetic: bool, source: str = "validation") -> DriftReference | None:
    """Bins and counts from real samples and the model's FP32 outputs on them; None for
    synthetic samples (a reference of random noise would make every live window "drift")."""
    if synthetic or len(samples) == 0:
        return None
    return build_reference(samples.arrays, outputs, source=source)
