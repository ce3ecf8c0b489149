"""Small ONNX graph utilities the ONNX passes share: opset upgrade, saving, static shapes.

ONNX Runtime's stock ``quantize_static`` emits an invalid model when fed an opset-11/12 model
with per-channel weights (DequantizeLinear only has ``axis`` from opset 13), so quantisation
passes call :func:`upgraded` first. The result is cached in the build's shared context so
several targets upgrade once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeops.errors import UnsupportedModelError

__all__ = ["fix_batch", "model_opset", "save_model", "upgraded"]

_PROTOBUF_SAFE_BYTES = 1_800_000_000


def model_opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def upgraded(shared: dict[str, Any], min_opset: int) -> Any:
    """The source model at opset ``min_opset`` or newer (cached in ``shared``)."""
    import onnx
    from onnx import version_converter

    model = shared["model"]
    if model_opset(model) >= min_opset:
        return model
    key = f"model@opset{min_opset}"
    if key not in shared:
        try:
            up = version_converter.convert_version(model, min_opset)
            onnx.checker.check_model(up)
        except Exception as exc:  # the converter raises bare RuntimeErrors on unsupported ops
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnsupportedModelError(
                f"cannot upgrade the model from opset {model_opset(model)} to {min_opset} "
                f"(needed for per-channel quantisation): {msg}",
                hint="re-export at opset 13+ or use --precision fp32") from None
        shared[key] = up
    return shared[key]


def lowest_ir_version(model: Any) -> int:
    """The lowest ONNX IR version ``model`` can declare: what its opsets and functions need.

    The onnx package stamps models with its own newest IR version (14 for onnx 1.23), which a
    device's older ONNX Runtime refuses ("Unsupported model IR version: 14, max supported IR
    version: 13") although nothing in the graph needs it. Never raises the version.
    """
    from onnx import helper

    need = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    if len(model.functions):
        need = max(need, 8)                    # model-local functions arrived with IR 8
    return min(int(model.ir_version), max(int(need), 3))


def save_model(model: Any, path: Path) -> Path:
    """Save; models too big for one protobuf keep their weights in ``<name>.data`` beside it.

    The IR version is lowered to what the model needs (:func:`lowest_ir_version`), so an
    artifact built with a new onnx still loads in the older runtime a device may have.
    """
    import onnx

    model.ir_version = lowest_ir_version(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    if model.ByteSize() > _PROTOBUF_SAFE_BYTES:
        onnx.save_model(model, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=f"{path.name}.data")
    else:
        onnx.save_model(model, str(path))
    return path


def fix_batch(model: Any, shapes: dict[str, tuple[int, ...]]) -> Any:
    """Copy of ``model`` with the given input shapes made static (for static-shape targets)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if vi.name in shapes:
            for d, v in zip(vi.type.tensor_type.shape.dim, shapes[vi.name], strict=True):
                d.Clear()
                d.dim_value = int(v)
    return m
