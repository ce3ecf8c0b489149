"""Run a TFLite flatbuffer in LiteRT: one place that knows the interpreter's API and I/O quirks.

Prefers ``ai_edge_litert`` and falls back to ``tflite_runtime``. Inputs and outputs are passed in
the artifact's own layout and dtype; :meth:`LiteRT.run_float` quantises float inputs and
dequantises int8 outputs with the tensors' own parameters so callers compare real values.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["LiteRT", "litert_version"]


def _interpreter_module() -> Any:
    for mod in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return importlib.import_module(mod)
        except ImportError:
            continue
    raise ImportError("no LiteRT interpreter (ai-edge-litert): pip install 'edgeops[tflite]'")


def litert_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("ai-edge-litert", "tflite-runtime"):
        try:
            return f"{dist} {version(dist)}"
        except PackageNotFoundError:
            continue
    return "unknown"


class LiteRT:
    """One interpreter over model bytes; ``preserve`` keeps intermediates for calibration."""

    def __init__(self, model: bytes, *, threads: int = 1, preserve: bool = False) -> None:
        mod = _interpreter_module()
        kwargs: dict[str, Any] = {"model_content": model, "num_threads": threads}
        if preserve:
            # delegates (XNNPACK) fuse partitions and never materialise their intermediates
            kwargs["experimental_preserve_all_tensors"] = True
            kwargs["experimental_op_resolver_type"] = \
                mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.it = mod.Interpreter(**kwargs)
        self.it.allocate_tensors()
        self.inputs = self.it.get_input_details()
        self.outputs = self.it.get_output_details()

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Raw outputs, in the graph's output order, for raw inputs in the graph's order."""
        for d, x in zip(self.inputs, feeds, strict=True):
            self.it.set_tensor(d["index"], np.ascontiguousarray(x, d["dtype"]))
        self.it.invoke()
        return [self.it.get_tensor(d["index"]).copy() for d in self.outputs]

    def quantise_inputs(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Real-valued inputs as the artifact takes them (int8 inputs quantised)."""
        raw: list[np.ndarray] = []
        for d, x0 in zip(self.inputs, feeds, strict=True):
            x = np.asarray(x0, np.float32)
            if d["dtype"] == np.int8:
                scale, zp = d["quantization"]
                x = np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)
            raw.append(x)
        return raw

    def run_float(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Real-valued outputs for real-valued inputs, (de)quantising int8 I/O."""
        return self.dequantise_outputs(self.run(self.quantise_inputs(feeds)))

    def dequantise_outputs(self, outs: Sequence[np.ndarray]) -> list[np.ndarray]:
        res = []
        for d, y in zip(self.outputs, outs, strict=True):
            if d["dtype"] == np.int8:
                scale, zp = d["quantization"]
                y = (y.astype(np.float32) - zp) * scale
            res.append(y.astype(np.float32))
        return res

    def tensor_values(self) -> dict[str, np.ndarray]:
        """Every tensor's current value by name (after a run with ``preserve=True``)."""
        out: dict[str, np.ndarray] = {}
        for d in self.it.get_tensor_details():
            try:
                out[d["name"]] = self.it.get_tensor(d["index"])
            except ValueError:
                continue
        return out
