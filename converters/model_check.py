"""Load a source ONNX model once and refuse it early, naming every problem at once.

A build must fail before it writes anything when the model cannot be handled, and a user fixing
a model wants the whole list of offending nodes, not the first one ``onnx.checker`` trips on.
So the model is parsed, its nodes (subgraphs of ``If``/``Loop``/``Scan`` included) are scanned
against the operator schemas for the model's opsets, then checked and finally opened in ONNX
Runtime. Models over 2 GB (external data) are checked by path, as protobuf cannot hold them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeops.errors import BadContentError, UnsupportedModelError, UsageError

__all__ = ["SourceModel", "initializer_bytes", "iter_nodes", "load_source", "unsupported_nodes"]

_KNOWN_CUSTOM_DOMAINS = {"com.microsoft", "com.microsoft.nchwc", "ai.onnx.ml",
                         "ai.onnx.preview.training", "com.ms.internal.nhwc"}


class NotOnnxError(BadContentError):
    default_hint = "give an ONNX model file (.onnx) exported from your framework"


@dataclass(frozen=True)
class SourceModel:
    """The checked source model and the facts the manifest records about it."""

    path: Path
    model: Any                      # onnx.ModelProto (weights loaded, external data included)
    sha256: str                     # over the model file, then its external data files
    size: int                       # bytes of those files together
    opset: int
    producer: str
    external_data: bool

    @property
    def large(self) -> bool:
        """Too big to serialise as one protobuf (weights included)."""
        from converters.onnx_utils import PROTOBUF_SAFE_BYTES, proto_bytes

        return proto_bytes(self.model) > PROTOBUF_SAFE_BYTES

    @property
    def weight_bytes(self) -> int:
        """Bytes of the main graph's initialisers, from their shapes (no protobuf size needed)."""
        return initializer_bytes(self.model)


def initializer_bytes(model: Any) -> int:
    """Bytes of ``model``'s top-level initialisers (shape x element size; strings count 0)."""
    import math

    import onnx

    total = 0
    for t in model.graph.initializer:
        try:
            item = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except (KeyError, ValueError, TypeError):
            continue
        total += math.prod(t.dims) * item
    return total


def _sha256(*paths: Path) -> tuple[str, int]:
    """One digest over the files' bytes, in order, and their total size."""
    h = hashlib.sha256()
    n = 0
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
                n += len(block)
    return h.hexdigest(), n


def _external_files(model: Any) -> list[str]:
    """Locations of the external data files, in order of first reference."""
    import onnx

    seen: dict[str, None] = {}
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            seen.update({e.value: None for e in t.external_data if e.key == "location"})
    return list(seen)


def iter_nodes(graph: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every node with a readable location, descending into subgraph attributes."""
    import onnx

    for i, node in enumerate(graph.node):
        where = f"{prefix}{node.name or f'#{i}'}"
        yield where, node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_nodes(attr.g, f"{where}/{attr.name}/")
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for j, g in enumerate(attr.graphs):
                    yield from iter_nodes(g, f"{where}/{attr.name}[{j}]/")


def unsupported_nodes(model: Any) -> list[str]:
    """``"node 'n' (domain::Op)"`` for every node no known schema (at the model's opset) covers."""
    import onnx

    opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    bad: list[str] = []
    for where, node in iter_nodes(model.graph):
        domain = node.domain or "ai.onnx"
        label = node.op_type if domain == "ai.onnx" else f"{domain}::{node.op_type}"
        if domain in _KNOWN_CUSTOM_DOMAINS - {"ai.onnx.ml"}:
            continue                          # ONNX Runtime contrib ops: ORT itself decides
        if domain not in opsets:
            bad.append(f"node '{where}' ({label}: domain not imported)")
            continue
        if domain not in ("ai.onnx", "ai.onnx.ml"):
            bad.append(f"node '{where}' ({label}: custom op)")
            continue
        try:
            onnx.defs.get_schema(node.op_type, opsets[domain], node.domain)
        except onnx.defs.SchemaError:
            bad.append(f"node '{where}' ({label}: not an operator at opset {opsets[domain]})")
    return bad


def load_source(path: Path) -> SourceModel:
    """Parse, scan, check and open the model; one clear error for whatever is wrong."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model {path} does not exist", hint="check the MODEL path")
    sha, size = _sha256(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise NotOnnxError(f"{path} is not an ONNX model (cannot parse it: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                           ) from None
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.node:
        raise NotOnnxError(f"{path} is not an ONNX model (no graph; truncated or another format?)")
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    bad = unsupported_nodes(model)
    if bad:
        raise UnsupportedModelError(f"{len(bad)} unsupported node(s): {'; '.join(bad)}")
    try:
        onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadContentError(f"{path} fails onnx.checker: {first}",
                              hint="re-export the model; check the exporter's opset") from None
    if external:
        files = _external_files(model)
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError) as exc:
            raise BadContentError(f"{path}: cannot read its external data ({exc})",
                                  hint="keep the .data files next to the model") from None
        # The weights are the model: the digest (and size) cover the data files too.
        sha, size = _sha256(path, *(path.parent / f for f in files))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    _open_in_ort(path)
    return SourceModel(path=path, model=model, sha256=sha, size=size, opset=opset,
                       producer=f"{model.producer_name} {model.producer_version}".strip(),
                       external_data=external)


def _open_in_ort(path: Path) -> None:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises several unrelated classes; all mean "cannot load"
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(f"ONNX Runtime cannot load {path}: {msg}") from None
