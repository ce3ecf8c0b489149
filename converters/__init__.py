"""Converters: turn a trained ONNX model into validated per-target artifacts.

See :mod:`converters.api` for the contract and :mod:`edgeops.targets` for the targets.
"""
