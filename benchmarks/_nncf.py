"""NNCF 3.4's post-training quantiser (ONNX backend) for benchmarks/converter_zoo.py, run in
its own venv through benchmarks/_nncf_worker.py.

Why a subprocess: NNCF is a benchmark-only baseline with its own dependency tree, kept out of
the project's environment (docs/DEPENDENCIES.md), the way benchmarks/_drift_raw.py runs the raw
drift detectors. Without the venv (``--nncf-venv``, default /work/venvs/nncf, made with
:data:`SETUP`), :func:`find` returns the line the table shows instead of the NNCF rows.
Nothing is downloaded while it runs: the worker gets proxies pointing at a closed port and
NNCF's telemetry is switched off.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_VENV", "SETUP", "find", "quantise"]

DEFAULT_VENV = Path("/work/venvs/nncf")
SETUP = ("python3 -m venv /work/venvs/nncf && /work/venvs/nncf/bin/pip install nncf==3.4.0 "
         "onnx onnxruntime==1.32.0 numpy")
WORKER = Path(__file__).with_name("_nncf_worker.py")
_OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
            "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
            "NO_PROXY": "", "no_proxy": "",
            # NNCF 3.4 replaces its telemetry with a stub when NNCF_CI is set (its
            # nncf/telemetry/wrapper.py); it has no other switch
            "NNCF_CI": "1"}


def find(venv: Path) -> tuple[Path | None, str]:
    """(the venv's python, "") when NNCF imports there, else (None, why: with the setup line)."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None, f"not installed: {SETUP}"
    probe = subprocess.run([str(python), "-c", "import nncf, onnx, onnxruntime"],
                           capture_output=True, text=True, check=False, env=_env())
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1][:160]
        return None, f"not installed ({last}): {SETUP}"
    return python, ""


def _env() -> dict[str, str]:
    env = {**os.environ, **_OFFLINE}
    env.pop("PYTHONPATH", None)           # the worker must not see the project's packages
    return env


def quantise(python: Path, model: Path, calibration: Path, out: Path,
             settings: dict[str, Any], timeout_s: float = 1800.0) -> dict[str, Any]:
    """One build in a fresh worker process: its answer, or ``{"error": ...}``."""
    req = {"model": str(model), "calibration": str(calibration), "out": str(out), **settings}
    try:
        proc = subprocess.run([str(python), str(WORKER), json.dumps(req)], capture_output=True,
                              text=True, timeout=timeout_s, check=False, env=_env())
    except subprocess.TimeoutExpired:
        return {"error": f"NNCF did not finish in {timeout_s:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    try:
        resp: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return {"error": f"NNCF worker exited {proc.returncode}: {tail}"}
    return resp
