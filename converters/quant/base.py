"""What every quantisation pass shares: its settings, its report, and how a pass is run.

A pass is one technique (one module in this package). It declares typed settings as a frozen
dataclass (each field with a default and a ``description`` in its metadata), says whether it
can apply to a graph (:meth:`QuantPass.applies` returns the reason it cannot, or ``None``),
and runs. Two kinds exist because they act at different points of the INT8 pipeline:

* a *graph* pass rewrites the FP32 model before calibration and must keep its FP32 outputs
  (equalisation, SmoothQuant migration) or deliberately pre-compensate the quantiser
  (bias correction); it returns the new model;
* a *range* pass turns calibration data into the ranges ORT's quantiser is given.

:func:`run_guarded` runs one pass so that a failure is a warning and a recorded
``failed`` outcome, and the pipeline goes on with the model as it was (the next cheaper
technique), never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol, TypeVar

__all__ = ["PassOutcome", "QuantPass", "describe_settings", "run_guarded", "setting"]

log = logging.getLogger(__name__)

Status = Literal["applied", "skipped", "failed"]
T = TypeVar("T")


def setting(default: T, description: str) -> T:
    """A settings field with its description (read by :func:`describe_settings`)."""
    out: T = field(default=default, metadata={"description": description})
    return out


def describe_settings(settings: Any) -> dict[str, dict[str, Any]]:
    """``{name: {type, value, description}}`` for a settings dataclass (for docs and reports)."""
    return {f.name: {"type": str(f.type), "value": getattr(settings, f.name),
                     "description": f.metadata.get("description", "")}
            for f in fields(settings)}


@dataclass(frozen=True)
class PassOutcome:
    """What one pass did to one build: recorded in the artifact's details (the manifest)."""

    name: str
    status: Status
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, **self.data}


class QuantPass(Protocol):
    """The interface every pass module implements (AdaRound and mixed precision plug in here)."""

    name: str

    def applies(self, model: Any) -> str | None:
        """``None`` when the pass can run on ``model`` (an onnx.ModelProto), else why not."""


def run_guarded(name: str, fn: Callable[[], tuple[T, PassOutcome]], fallback: T
                ) -> tuple[T, PassOutcome]:
    """Run a pass; on any exception warn, record ``failed`` and return ``fallback``."""
    try:
        return fn()
    except Exception as exc:  # a pass is an optimisation: its failure must not fail the build
        msg = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        log.warning("quantisation pass %s failed (%s); continuing without it", name, msg)
        return fallback, PassOutcome(name, "failed", f"{msg}; continued without it")
