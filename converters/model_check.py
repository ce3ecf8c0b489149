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

__all__ = ["SourceModel", "dedupe_opsets", "initializer_bytes", "iter_nodes", "load_source",
           "non_tensor_io", "unsupported_nodes"]

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


def _type_name(tp: Any) -> str:
    """ONNX's own spelling of a value type: ``seq(map(int64,tensor(float)))``."""
    import onnx

    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({onnx.helper.tensor_dtype_to_string(tp.tensor_type.elem_type)})" \
            .replace("TensorProto.", "").lower()
    if kind == "sequence_type":
        return f"seq({_type_name(tp.sequence_type.elem_type)})"
    if kind == "map_type":
        key = onnx.helper.tensor_dtype_to_string(tp.map_type.key_type)
        return f"map({key.replace('TensorProto.', '').lower()},{_type_name(tp.map_type.value_type)})"
    if kind == "optional_type":
        return f"optional({_type_name(tp.optional_type.elem_type)})"
    return kind or "no type"


def non_tensor_io(model: Any) -> tuple[list[str], bool]:
    """Inputs/outputs that are not tensors, and whether a ZipMap makes any of them.

    Bundles, golden files, accuracy metrics and the device agent all deal in tensors. The
    common non-tensor output is scikit-learn's: skl2onnx ends classifiers with ``ZipMap``
    (probabilities as a sequence of ``{class: probability}`` maps) unless exported with
    ``options={"zipmap": False}``, which gives the same probabilities as a tensor.
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    bad: list[str] = []
    zipmap = False
    for what, values in (("input", model.graph.input), ("output", model.graph.output)):
        for vi in values:
            if vi.name in inits or vi.type.WhichOneof("value") == "tensor_type":
                continue
            node = producers.get(vi.name)
            via = f", made by {node.op_type} node '{node.name}'" if node is not None else ""
            zipmap |= node is not None and node.op_type == "ZipMap"
            bad.append(f"{what} '{vi.name}' ({_type_name(vi.type)}{via}: not a tensor)")
    return bad, zipmap


def dedupe_opsets(model: Any) -> None:
    """Drop repeated imports of one domain at one version (in place); conflicting ones fail.

    skl2onnx 1.20 imports the default domain twice at the same version. ONNX Runtime runs
    that, but its quantiser wants exactly one default-domain import ("Failed to find proper
    ai.onnx domain"), so the in-memory source keeps one.
    """
    seen: dict[str, int] = {}
    keep = []
    for o in model.opset_import:
        domain = o.domain or "ai.onnx"
        if domain in seen:
            if seen[domain] != o.version:
                raise BadContentError(
                    f"the model imports domain '{domain}' at opsets {seen[domain]} and "
                    f"{o.version}", hint="re-export it; a model imports each domain once")
            continue
        seen[domain] = o.version
        keep.append(o)
    if len(keep) != len(model.opset_import):
        import onnx

        fixed = [onnx.helper.make_opsetid(o.domain, o.version) for o in keep]
        del model.opset_import[:]
        model.opset_import.extend(fixed)


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
    dedupe_opsets(model)
    bad = unsupported_nodes(model)
    io, zipmap = non_tensor_io(model)
    if bad or io:
        what = "; ".join(([f"{len(bad)} unsupported node(s): {'; '.join(bad)}"] if bad else [])
                         + ([f"{len(io)} non-tensor input/output(s): {'; '.join(io)}"]
                            if io else []))
        raise UnsupportedModelError(
            what, hint="export the classifier with skl2onnx's options={'zipmap': False} "
                       "(probabilities as a [N, classes] tensor); bundles, golden checks and "
                       "devices work on tensors" if zipmap else
                       "re-export with tensor inputs and outputs only" if io and not bad
                       else None)
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
