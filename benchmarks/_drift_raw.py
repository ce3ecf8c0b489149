"""The raw-data reference detectors (Alibi Detect's KSDrift, Evidently's data-drift preset) for
benchmarks/drift.py, run in their own venv through benchmarks/_drift_raw_worker.py.

Why a subprocess: they are benchmark-only tools with heavy dependency trees, kept out of the
project's environment (docs/DEPENDENCIES.md), the way benchmarks/converter_tflite.py calls onnx2tf
from its own venv. Without the venv (``--driftref-venv``, default /work/venvs/driftref, made with
``python3 -m venv /work/venvs/driftref && /work/venvs/driftref/bin/pip install alibi-detect
evidently numpy``), :func:`start` returns None and the benchmark prints "not installed" in their
columns.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_VENV", "RawDetectors", "start"]

DEFAULT_VENV = Path("/work/venvs/driftref")
WORKER = Path(__file__).with_name("_drift_raw_worker.py")


class RawDetectors:
    """One long-lived worker process; arrays travel as .npy files in a private directory."""

    def __init__(self, python: Path) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="driftref-")
        self._n = 0
        self._proc = subprocess.Popen([str(python), str(WORKER)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, bufsize=1)
        self.versions: dict[str, str] = self._call({"op": "versions"})

    def _call(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(req) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the driftref worker exited")
        resp: dict[str, Any] = json.loads(line)
        if "error" in resp:
            raise RuntimeError(f"driftref worker: {resp['error']}")
        return resp

    def _file(self, x: np.ndarray) -> str:
        self._n += 1
        path = Path(self._tmp.name) / f"{self._n % 4}.npy"
        np.save(path, np.asarray(x, dtype=np.float32))
        return str(path)

    def reference(self, name: str, x: np.ndarray) -> None:
        self._call({"op": "reference", "name": name, "path": self._file(x)})

    def test(self, name: str, x: np.ndarray, tools: list[str]) -> dict[str, Any]:
        if not tools:
            return {}
        return self._call({"op": "test", "name": name, "path": self._file(x), "tools": tools})

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)
        self._tmp.cleanup()


def start(venv: Path) -> RawDetectors | None:
    """The worker, or None when the venv is absent or its packages do not import."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    probe = subprocess.run([str(python), "-c", "import alibi_detect, evidently, pandas"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return None
    return RawDetectors(python)
