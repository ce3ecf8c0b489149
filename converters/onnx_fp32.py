"""The FP32 pass: ONNX Runtime's offline graph optimisation, saved as the artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converters.api import BackendContext
from edgeops.errors import ConversionError

__all__ = ["optimise_fp32"]


def optimise_fp32(ctx: BackendContext) -> tuple[Path, dict[str, Any]]:
    """ORT offline graph optimisation, saved. Extended level only on CPU targets.

    The layout level (NCHWc) is specific to the build machine's ISA, so it is never saved;
    GPU/NPU providers get basic (provider-independent) optimisations only.
    """
    import onnxruntime as ort

    cpu_only = ctx.profile.providers == ("CPUExecutionProvider",)
    level = (ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if cpu_only
             else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    out = ctx.workdir / "model.onnx"
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.optimized_model_filepath = str(out)
    so.log_severity_level = 3
    source = ctx.data.source
    if source.external_data:
        if source.large:
            raise ConversionError(
                f"target {ctx.profile.name}: the model's weights exceed what one artifact file "
                "holds (2 GB protobuf limit); bundles carry one file per target",
                hint="quantise it (--precision int8 / fp16) so the artifact fits")
        # Fed from memory, ORT writes a self-contained artifact (no reference to the .data).
        ort.InferenceSession(source.model.SerializeToString(), so,
                             providers=["CPUExecutionProvider"])
    else:
        ort.InferenceSession(str(source.path), so,
                             providers=["CPUExecutionProvider"])
    return out, {"graph_optimization": "extended" if cpu_only else "basic"}
