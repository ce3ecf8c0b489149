"""One small runner interface over ONNX Runtime and LiteRT, so the rest of the agent is runtime-blind.

Why it exists: the agent's health check and inference service, the hardware tests and the
benchmarks must load a model the same way the manifest says it should be loaded (runtime,
providers, threads) and run it with a ``{name: array}`` feed; it sits in edgeops because a
blessing vouches for the agent's own loader, and hardware_tests may not import the agent.
Runtimes import lazily inside the loaders: a camera with only ONNX Runtime never imports LiteRT,
and nothing here imports the (large) ``onnx`` package.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeops.errors import BadContentError

__all__ = [
    "ModelLoadError",
    "ModelRunError",
    "ModelRunner",
    "OnnxRunner",
    "TensorInfo",
    "TfliteRunner",
    "available_onnx_providers",
    "load_runner",
]


class ModelLoadError(BadContentError):
    """The runtime refused the model (corrupt file, unsupported op, missing delegate)."""

    default_hint = "the artifact does not load on this device; rebuild it for this target"


class ModelRunError(BadContentError):
    """The model failed while running on a given input."""

    default_hint = "check the input names, shapes and dtypes against `agent status`"


@dataclass(frozen=True)
class TensorInfo:
    """What the loaded model itself says about an input or output."""

    name: str
    dtype: str                       # numpy dtype name, e.g. "float32"
    shape: tuple[int | str | None, ...]


class ModelRunner(Protocol):
    """A loaded model. ``run`` may be called from several threads at once."""

    runtime: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16",
              "tensor(double)": "float64", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
              "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
              "tensor(bool)": "bool", "tensor(uint16)": "uint16"}


def available_onnx_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


class OnnxRunner:
    """ONNX Runtime session; ``InferenceSession.run`` is thread-safe, so no lock.

    ``run`` calls the session's C++ binding directly instead of ORT's Python
    ``InferenceSession.run``: that wrapper re-validates every feed in Python (required names
    present, OrtValue ownership, WebGPU graph capture), which costs ~0.7 µs a call, a fifth of a
    tiny model's run time (benchmarks/agent_footprint.py). The one check the C++ side does not
    make with a clear message, a missing required input, is made here against the names read
    once at load; the C++ side still refuses unknown names, wrong dtypes, ranks and dimensions
    (as ORT's ``INVALID_ARGUMENT``, raised here as :class:`ModelRunError`). Feeds with anything
    but numpy arrays (OrtValues, lists) go through the wrapper, which converts and checks them.
    """

    runtime = "onnxruntime"

    def __init__(self, path: Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int = 1) -> None:
        import onnxruntime as ort  # a base dependency: a broken install fails loudly
        available = set(ort.get_available_providers())
        chosen = [p for p in providers if p in available]
        # The profile lists accelerators first; CPU is always the last resort.
        if "CPUExecutionProvider" not in chosen:
            chosen.append("CPUExecutionProvider")
        self.providers = tuple(chosen)
        self.skipped_providers = tuple(p for p in providers if p not in available)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._sess = ort.InferenceSession(str(path), sess_options=opts,
                                              providers=list(self.providers))
        except Exception as exc:  # ORT raises its own untyped exception classes
            raise ModelLoadError(f"ONNX Runtime cannot load {Path(path).name}: "
                                 f"{_first_line(exc)}") from None
        self.inputs = tuple(TensorInfo(i.name, _ORT_TYPES.get(i.type, i.type), tuple(i.shape))
                            for i in self._sess.get_inputs())
        self.outputs = tuple(TensorInfo(o.name, _ORT_TYPES.get(o.type, o.type), tuple(o.shape))
                             for o in self._sess.get_outputs())
        self._output_names = [o.name for o in self.outputs]
        self._required = tuple(i.name for i in self._sess.get_inputs()
                               if not i.type.startswith("optional"))
        # The binding's ``run(output_names, feed, run_options)``; None if a future ORT renames
        # it, and then every call takes the public wrapper.
        binding = getattr(self._sess, "_sess", None)
        self._c_run: Any = getattr(binding, "run", None)

    @property
    def active_providers(self) -> tuple[str, ...]:
        """The providers the session really runs on, best first (ORT drops any that failed
        to start without raising); hardware_tests compares this with what was asked for."""
        return tuple(self._sess.get_providers()) if self._sess is not None else ()

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self._output_names
        c_run = self._c_run
        if type(feed) is not dict:
            feed = dict(feed)
        for name in self._required:
            if name not in feed:
                raise ModelRunError(f"missing input {name!r}")
        try:
            for value in feed.values():
                if type(value) is not np.ndarray:
                    c_run = None        # OrtValue, list, ...: the wrapper knows what to do
                    break
            values = (c_run or self._sess.run)(names, feed, None)
        except Exception as exc:
            raise ModelRunError(f"model run failed: {_first_line(exc)}") from None
        if len(names) == 1:
            return {names[0]: values[0]}
        return dict(zip(names, values, strict=True))

    def close(self) -> None:
        # Dropping the references frees the session once in-flight runs release theirs.
        self._sess = None
        self._c_run = None


def _tflite_interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ModelLoadError("neither ai-edge-litert nor tflite-runtime is installed",
                                 hint="pip install 'edgeops[tflite]' (or tflite-runtime)") from None
    return Interpreter


class TfliteRunner:
    """LiteRT interpreter. Interpreters are not thread-safe: one lock around invoke."""

    runtime = "litert"

    def __init__(self, path: Path, threads: int = 1, delegates: Sequence[Any] = ()) -> None:
        interpreter_cls = _tflite_interpreter_class()
        try:
            # ``delegates``: loaded NPU delegates (Edge TPU, Ethos-U); none means the default
            # CPU path (XNNPACK).
            self._it = interpreter_cls(model_path=str(path), num_threads=max(1, threads),
                                       experimental_delegates=list(delegates) or None)
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"LiteRT cannot load {Path(path).name}: "
                                 f"{_first_line(exc)}") from None
        self._lock = threading.Lock()
        self._in = self._it.get_input_details()
        self._out = self._it.get_output_details()
        self.inputs = tuple(TensorInfo(d["name"], np.dtype(d["dtype"]).name,
                                       tuple(int(x) for x in d["shape"])) for d in self._in)
        self.outputs = tuple(TensorInfo(d["name"], np.dtype(d["dtype"]).name,
                                        tuple(int(x) for x in d["shape"])) for d in self._out)

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            try:
                for d in self._in:
                    if d["name"] not in feed:
                        raise ModelRunError(f"missing input {d['name']!r}")
                    value = np.asarray(feed[d["name"]], dtype=d["dtype"])
                    if tuple(value.shape) != tuple(d["shape"]):
                        self._it.resize_tensor_input(d["index"], value.shape)
                        self._it.allocate_tensors()
                    self._it.set_tensor(d["index"], value)
                self._it.invoke()
                return {d["name"]: np.array(self._it.get_tensor(d["index"])) for d in self._out}
            except ModelRunError:
                raise
            except (ValueError, RuntimeError) as exc:
                raise ModelRunError(f"model run failed: {_first_line(exc)}") from None

    def close(self) -> None:
        self._it = None


def load_runner(path: Path, *, runtime: str, providers: Sequence[str] = (),
                threads: int = 1, delegates: Sequence[Any] = ()) -> ModelRunner:
    """Load ``path`` with the runtime the manifest names (``onnxruntime`` or ``litert``)."""
    if not Path(path).is_file():
        raise ModelLoadError(f"model file {path} is missing")
    if runtime == "onnxruntime":
        return OnnxRunner(path, providers or ("CPUExecutionProvider",), threads)
    if runtime in ("litert", "tflite"):
        return TfliteRunner(path, threads, delegates)
    raise ModelLoadError(f"unknown runtime {runtime!r} in the manifest",
                         hint="this agent runs onnxruntime and litert artifacts")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
