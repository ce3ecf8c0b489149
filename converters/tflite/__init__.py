"""TFLite (LiteRT) artifacts for ARM CPUs, Coral Edge TPU and Arm Ethos-U, without TensorFlow.

Importing this package registers the ``tflite`` backend with :mod:`converters.api`. The
flatbuffer is written by edgeops itself from the ONNX graph (see docs/TFLITE.md).
"""

from __future__ import annotations

from converters.api import register_backend
from converters.tflite.backend import tflite_backend
from converters.tflite.convert import PRECISIONS, ConversionResult, convert
from converters.tflite.npu import compatibility_report

__all__ = ["PRECISIONS", "ConversionResult", "compatibility_report", "convert", "tflite_backend"]

register_backend("tflite", tflite_backend)
