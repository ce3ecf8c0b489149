"""A real Mosquitto broker per test (or per module), on a free loopback port, with its own config.

Reusable by other test packages: ``MosquittoBroker(tmp_path).start()`` gives a plain listener
and, when asked, a mutual-TLS listener with a freshly made CA (see :mod:`.tlsfiles`). When
``EDGEOPS_REQUIRE_SERVICES=1`` (CI), a missing ``mosquitto`` binary fails the test instead of
skipping it.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["MosquittoBroker", "TlsMaterial", "find_mosquitto", "free_port"]


def find_mosquitto() -> str:
    path = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)),
        None)
    if path is None:
        if os.environ.get("EDGEOPS_REQUIRE_SERVICES") == "1":
            pytest.fail("mosquitto is required (EDGEOPS_REQUIRE_SERVICES=1) but not installed")
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TlsMaterial:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


class MosquittoBroker:
    """Start/stop/restart one mosquitto process bound to 127.0.0.1 only."""

    def __init__(self, workdir: Path, tls: TlsMaterial | None = None,
                 max_packet_bytes: int = 1024 * 1024) -> None:
        self.binary = find_mosquitto()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.max_packet_bytes = max_packet_bytes
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _write_conf(self) -> None:
        # as root, mosquitto drops to user "mosquitto", which cannot read pytest's tmp files
        lines = [f"user {getpass.getuser()}", "per_listener_settings false",
                 "allow_anonymous true", "persistence false",
                 f"max_packet_size {self.max_packet_bytes}", "log_dest stderr",
                 "log_type error", "log_type warning",
                 f"listener {self.port} 127.0.0.1"]
        if self.tls is not None:
            lines += [f"listener {self.tls_port} 127.0.0.1",
                      f"cafile {self.tls.ca}", f"certfile {self.tls.server_cert}",
                      f"keyfile {self.tls.server_key}", "require_certificate true",
                      "use_identity_as_username true"]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> MosquittoBroker:
        self._write_conf()
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)],
                                         stdout=logf, stderr=logf)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"mosquitto exited: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()
