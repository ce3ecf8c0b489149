"""Opt-in data capture for the retraining loop: open on a cohort, take samples in, export .npz."""
