"""A real Mosquitto for tests and benchmarks: own config, free loopback port, killed after.

Reusable by any test package (``from tests.fleet.mqtt.broker import MosquittoBroker``) and by
benchmarks. The broker is tuned the way docs/FLEET_MQTT.md recommends for a manager (large
in-flight window and queues) unless the caller asks otherwise. With EDGEOPS_REQUIRE_SERVICES=1
(CI) a missing ``mosquitto`` binary is an error, otherwise the caller skips.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BrokerStartError", "BrokerUnavailableError", "MosquittoBroker", "find_mosquitto", "free_port",
           "running_broker", "services_required"]


class BrokerUnavailableError(RuntimeError):
    """No mosquitto binary here (skip, or fail under EDGEOPS_REQUIRE_SERVICES=1)."""


class BrokerStartError(RuntimeError):
    """mosquitto is installed but did not start with our config: a bug, never a skip."""


def services_required() -> bool:
    return os.environ.get("EDGEOPS_REQUIRE_SERVICES", "") not in ("", "0")


def find_mosquitto() -> str | None:
    for cand in (os.environ.get("EDGEOPS_MOSQUITTO"), shutil.which("mosquitto"),
                 "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MosquittoBroker:
    """Configuration of one throwaway broker; ``start()`` runs it, ``stop()`` kills it."""

    max_inflight_messages: int = 0          # 0 = unlimited (per client, outgoing QoS>0)
    max_queued_messages: int = 1_000_000    # per client, while its in-flight window is full
    max_queued_bytes: int = 0               # 0 = unlimited
    max_packet_size: int = 1024 * 1024      # bytes; chunks are 64 KiB by default
    extra_conf: list[str] = field(default_factory=list)
    tls: dict[str, str] | None = None       # {"cafile", "certfile", "keyfile"} for mqtts
    require_certificate: bool = False
    tcp_nodelay: bool = True                # mosquitto's default is off (Nagle)
    sys_interval_s: int = 10                # how often $SYS counters are published
    host: str = "127.0.0.1"
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = None
    _tls_files: dict[str, str] | None = None
    _dir: Path | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def config_text(self) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            f"max_inflight_messages {self.max_inflight_messages}",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_queued_bytes {self.max_queued_bytes}",
            f"max_packet_size {self.max_packet_size}",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            f"sys_interval {self.sys_interval_s}",
        ]
        if self.tcp_nodelay:
            lines.append("set_tcp_nodelay true")
        if self.tls:
            f = self._tls_files or self.tls
            lines += [f"cafile {f['cafile']}", f"certfile {f['certfile']}",
                      f"keyfile {f['keyfile']}",
                      f"require_certificate {'true' if self.require_certificate else 'false'}"]
        return "\n".join(lines + self.extra_conf) + "\n"

    def start(self, timeout_s: float = 10.0) -> MosquittoBroker:
        exe = find_mosquitto()
        if exe is None:
            raise BrokerUnavailableError("mosquitto is not installed (apt-get install mosquitto)")
        if not self.port:
            self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="edgeops-mosquitto-"))
        # mosquitto started as root drops to its own user before reading certificates, so
        # they live in the broker's directory, readable by that user (throwaway test keys).
        os.chmod(self._dir, 0o755)  # noqa: S103 - see above; nothing secret lives here
        if self.tls:
            copied = {}
            for k, src in self.tls.items():
                dst = self._dir / f"{k}.pem"
                shutil.copyfile(src, dst)
                os.chmod(dst, 0o644)
                copied[k] = str(dst)
            self._tls_files = copied
        conf = self._dir / "mosquitto.conf"
        conf.write_text(self.config_text())
        log = open(self._dir / "mosquitto.log", "wb")  # noqa: SIM115 - lives as long as the broker
        self._proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerStartError(f"mosquitto exited: {self.log_text()[-500:]}")
            with contextlib.suppress(OSError), socket.create_connection(
                    (self.host, self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerStartError(f"mosquitto did not listen on port {self.port}")

    def log_text(self) -> str:
        if self._dir is None:
            return ""
        p = self._dir / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def restart(self, timeout_s: float = 10.0) -> None:
        """Kill and start again on the same port (clients see a disconnect)."""
        port = self.port
        self.stop()
        self.port = port
        self.start(timeout_s)


@contextlib.contextmanager
def running_broker(**kwargs: object) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(**kwargs).start()  # type: ignore[arg-type]
    try:
        yield broker
    finally:
        broker.stop()
