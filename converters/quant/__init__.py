"""The INT8 quantisation engine: one technique per module, chosen per model and effort.

* :mod:`converters.quant.mse_ranges`: activation clipping ranges minimising quantisation MSE;
* :mod:`converters.quant.equalise`: cross-layer equalisation of Conv pairs (exact in FP32);
* :mod:`converters.quant.bias_correction`: empirical bias correction of weight rounding;
* :mod:`converters.quant.smoothquant`: outlier migration from MatMul inputs to weights;
* :mod:`converters.quant.engine`: the order, the effort levels and the report;
* :mod:`converters.quant.base`: the pass interface, typed settings and guarded running.

converters/onnx_quant.py calls the engine around its calibration step; everything a pass did,
skipped or failed at is recorded in the artifact's ``details["quantisation_passes"]``.
"""

from converters.quant.base import PassOutcome, QuantPass, describe_settings
from converters.quant.engine import (
    ALL_PASSES,
    DEFAULT_PASSES,
    EFFORTS,
    EngineState,
    graph_passes,
    passes_for,
    range_passes,
)

__all__ = ["ALL_PASSES", "DEFAULT_PASSES", "EFFORTS", "EngineState", "PassOutcome", "QuantPass",
           "describe_settings", "graph_passes", "passes_for", "range_passes"]
