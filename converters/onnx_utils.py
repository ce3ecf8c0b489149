"""Small ONNX graph utilities the ONNX passes share: opset upgrade, saving, static shapes.

ONNX Runtime's stock ``quantize_static`` emits an invalid model when fed an opset-11/12 model
with per-channel weights (DequantizeLinear only has ``axis`` from opset 13), so quantisation
passes call :func:`upgraded` first. The result is kept in the build's typed cache
(:class:`converters.context.SourceCache`) so several targets upgrade once.

Models over 2 GB (external data) cannot be serialised as one protobuf, which is what the version
converter, the checker and ``ModelProto.ByteSize`` do in memory; :func:`proto_bytes` says how
big a model is without failing, and :func:`upgraded` converts such a model's weightless graph
(as read from disk) and loads the weights afterwards.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from edgeops.errors import UnsupportedModelError

__all__ = [
    "PROTOBUF_SAFE_BYTES",
    "fix_batch",
    "has_external_data",
    "inline_if_fits",
    "model_opset",
    "proto_bytes",
    "replace_nodes",
    "save_model",
    "upgraded",
]

PROTOBUF_SAFE_BYTES = 1_800_000_000   # below protobuf's 2 GiB hard limit
_OVER_LIMIT = 2**31


def proto_bytes(model: Any) -> int:
    """Serialised size of ``model``; at least 2 GiB when protobuf cannot serialise it at all."""
    from google.protobuf.message import EncodeError

    try:
        return int(model.ByteSize())
    except EncodeError:              # over 2 GiB: protobuf refuses even to count it
        return _OVER_LIMIT


def has_external_data(path: Path) -> bool:
    """Whether the model file at ``path`` keeps any initialiser in an external file."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)


def inline_if_fits(path: Path) -> Path:
    """Rewrite a model saved with external data as one self-contained file, if it fits in one.

    ONNX Runtime's quantisers write all-or-nothing: told to use external data (needed whenever
    the float source is over 2 GB) they do so even when the INT8 result is a quarter of that;
    an artifact must be one file, so it is folded back in and the data files removed.
    """
    import onnx

    skeleton = onnx.load(str(path), load_external_data=False)
    locations = {e.value for t in skeleton.graph.initializer
                 if t.data_location == onnx.TensorProto.EXTERNAL
                 for e in t.external_data if e.key == "location"}
    if not locations:
        return path
    model = onnx.load(str(path))
    if proto_bytes(model) > PROTOBUF_SAFE_BYTES:
        return path
    onnx.external_data_helper.convert_model_from_external_data(model)
    onnx.save_model(model, str(path))
    for loc in locations:
        (path.parent / loc).unlink(missing_ok=True)
    return path


def model_opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def upgraded(model: Any, min_opset: int, *, path: Path | None = None,
             cache: MutableMapping[int, Any] | None = None) -> Any:
    """``model`` at opset ``min_opset`` or newer.

    ``path`` is where ``model`` lives on disk (read from there when it is over 2 GB); ``cache``
    (opset -> model, e.g. :class:`converters.context.SourceCache`'s) keeps the conversion for
    the build's other targets.
    """
    import onnx
    from onnx import version_converter

    if model_opset(model) >= min_opset:
        return model
    if cache is not None and min_opset in cache:
        return cache[min_opset]
    try:
        if path is not None and proto_bytes(model) > PROTOBUF_SAFE_BYTES:
            up = _upgraded_from_disk(Path(path), min_opset)
        else:
            up = version_converter.convert_version(model, min_opset)
            onnx.checker.check_model(up)
    except Exception as exc:  # the converter raises bare RuntimeErrors on unsupported ops
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(
            f"cannot upgrade the model from opset {model_opset(model)} to {min_opset} "
            f"(needed for per-channel quantisation): {msg}",
            hint="re-export at opset 13+ or use --precision fp32") from None
    if cache is not None:
        cache[min_opset] = up
    return up


def _upgraded_from_disk(path: Path, min_opset: int) -> Any:
    """Convert the graph of a model over 2 GB without its weights, then load them.

    The weightless graph still names the source's external files (relative to its directory),
    so the checker runs there; the weights are read in only once the graph is converted.
    """
    import contextlib

    import onnx
    from onnx import version_converter

    skeleton = onnx.load(str(path), load_external_data=False)
    up = version_converter.convert_version(skeleton, min_opset)
    del skeleton
    with contextlib.chdir(path.parent):       # external locations are relative to the model
        onnx.checker.check_model(up)
    onnx.load_external_data_for_model(up, str(path.parent))
    return up


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
    if proto_bytes(model) > PROTOBUF_SAFE_BYTES:
        # onnx appends to an existing data file (the old bytes would stay, unused): start afresh.
        (path.parent / f"{path.name}.data").unlink(missing_ok=True)
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


def replace_nodes(model: Any, nodes: list[Any]) -> None:
    """Give ``model``'s graph the node list ``nodes`` and drop initializers nothing reads."""
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
