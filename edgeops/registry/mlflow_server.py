"""A private MLflow tracking server on a loopback port, for `edgeops demo --mlflow`, tests and
benchmarks: SQLite backend, local artifact directory, served by ``mlflow server``.

``mlflow server`` takes several seconds to start, so callers keep one per session. Job
execution (MLflow's GenAI scorers, which need the full ``mlflow`` package) is switched off, so
the ``mlflow-skinny`` client plus the server's own dependencies (extra ``mlflow``) suffice.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from edgeops.errors import ConfigError, TransportError

__all__ = ["LocalMlflowServer", "mlflow_available"]

START_TIMEOUT_S = 90.0


def mlflow_available() -> bool:
    """Whether the client and the server parts of the ``mlflow`` extra are importable."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("mlflow", "flask", "sqlalchemy", "alembic"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalMlflowServer:
    """``start()`` → ``uri``; ``stop()`` kills the server's process group."""

    workdir: Path
    port: int = 0
    uri: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout_s: float = START_TIMEOUT_S) -> str:
        if not mlflow_available():
            raise ConfigError("the MLflow server is not installed",
                              hint="install the extra: pip install 'edgeops[mlflow]'")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
        cmd = [exe] if exe else [sys.executable, "-m", "mlflow"]
        cmd += ["server", "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow.db'}",
                "--artifacts-destination", str(self.workdir / "artifacts"),
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        for inherited in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):   # it is the server
            env.pop(inherited, None)
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - the child owns it
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      cwd=self.workdir, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise TransportError(f"mlflow server exited with {self._proc.returncode}",
                                     hint=f"see {self.workdir / 'server.log'}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=1) as r:  # noqa: S310
                    if r.status == 200:
                        return self.uri
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise TransportError(f"mlflow server did not answer within {timeout_s:.0f}s",
                             hint=f"see {self.workdir / 'server.log'}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)

    @property
    def artifacts_dir(self) -> Path:
        return self.workdir / "artifacts"
