"""Drift detection from binned sketches: the reference a bundle carries, feature extraction
shared by build and device, and the two-sample tests the fleet runs (docs/DRIFT.md)."""

from edgeops.drift.reference import DriftReference, FeatureBins, TensorRule

__all__ = ["DriftReference", "FeatureBins", "TensorRule"]
