"""When ONNX Runtime's quantiser crashes on a graph: the next cheaper configuration, with a warning.

``quantize_static`` has bugs that only some graphs reach (ORT 1.32: a Gemm bias that is not a
vector crashes the per-channel int32-bias check, converters/onnx_bias). The graph passes avoid
the ones we know; for the others, issue 16 asks that "one that fails at run time falls back to
the next cheaper one with a warning, never a traceback". :data:`LADDER` is that order: the
plan as it is; then without the step that widens weight scales so an int32 bias cannot
overflow (the quantiser's most intricate per-channel code; the bias is then clipped where it
would overflow, which the accuracy gate sees); then per-tensor weights, the stock quantiser's
simplest form. Whatever a fallback builds still goes through the accuracy gate.

A quantiser that does not crash may still write a model ONNX Runtime cannot run (measured:
with the weight-scale adjustment off, a ``[1, N]`` Gemm bias gets a per-axis DequantizeLinear
whose scale does not fit it), so the first model each configuration writes must also pass the
caller's ``check`` (one sample through ORT, node by node) before the configuration counts.

A build quantises many times (range choice, performance- and accuracy-aware passes), each with
other nodes in float: :class:`QuantiserFallback` remembers how far down it went, so a
configuration that crashed is not tried again, and keeps the warnings for the report. When
every configuration fails, the first failure becomes one line (converters/failures).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from edgeops.errors import EdgeOpsError

__all__ = ["LADDER", "QdqConfig", "QuantiserFallback", "runs_as_written"]

T = TypeVar("T")


@dataclass(frozen=True)
class QdqConfig:
    """One way to call the quantiser: extra options on top of the plan's, and per-channel
    weights as planned (``None``) or forced."""

    name: str
    extra_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    per_channel: bool | None = None


_NO_BIAS_ADJUST = MappingProxyType({"QDQDisableWeightAdjustForInt32Bias": True})
LADDER: tuple[QdqConfig, ...] = (
    QdqConfig("as planned"),
    QdqConfig("without the int32-bias weight-scale adjustment", _NO_BIAS_ADJUST),
    QdqConfig("with per-tensor weights", _NO_BIAS_ADJUST, per_channel=False),
)


class QuantiserFallback:
    """Runs a quantisation down :data:`LADDER` until one configuration succeeds (sticky)."""

    def __init__(self, target: str, model: Path, progress: Callable[[str], None],
                 ladder: tuple[QdqConfig, ...] = LADDER) -> None:
        """``model``: the user's model, which a failure's line names."""
        if not ladder:
            raise ValueError("a fallback ladder needs at least one configuration")
        self._target, self._model, self._progress = target, model, progress
        self._ladder = ladder
        self._level = 0
        self._checked = -1          # the last level whose model passed ``check``
        self.warnings: list[str] = []

    @property
    def config(self) -> QdqConfig:
        """The configuration the next quantisation starts from."""
        return self._ladder[min(self._level, len(self._ladder) - 1)]

    def run(self, quantise: Callable[[QdqConfig], T],
            check: Callable[[T], object] | None = None) -> T:
        """``quantise(config)`` from the current configuration down, the first result of each
        configuration passed to ``check`` (which raises when it is unusable); on the last
        failure, a :class:`converters.failures.BuildFailure` line naming the first one."""
        first: Exception | None = None
        while self._level < len(self._ladder):
            cfg = self._ladder[self._level]
            try:
                result = quantise(cfg)
                if check is not None and self._checked < self._level:
                    check(result)
                    self._checked = self._level
                return result
            except EdgeOpsError:
                raise                   # ours, already one line (bad data, a refusal)
            except Exception as exc:    # any crash inside ORT's quantiser
                first = first or exc
                self._level += 1
                if self._level < len(self._ladder):
                    self._warn(cfg, exc, self._ladder[self._level])
        from converters.failures import explain

        assert first is not None
        tried = ", ".join(c.name for c in self._ladder)
        raise explain(first, self._model, f"'{self._target}: quantising' ({tried}: all failed)"
                      ) from first

    def _warn(self, failed: QdqConfig, exc: Exception, nxt: QdqConfig) -> None:
        from converters.failures import cause

        # Worded as the step it starts: progress() names the step a later failure is in.
        msg = (f"{self._target}: quantising {nxt.name} (ONNX Runtime's quantiser failed "
               f"{failed.name} {cause(exc)})")
        self.warnings.append(msg)
        self._progress(msg)


def runs_as_written(model: Path, feed: Mapping[str, Any]) -> None:
    """Raise what ONNX Runtime raises when ``model`` cannot load or run ``feed`` node by node
    as written: graph optimisations off, as the golden-tolerance check runs it, since fusing a
    DequantizeLinear into its consumer hides a scale that does not fit its tensor."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.log_severity_level = 4
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    sess.run(None, dict(feed))
