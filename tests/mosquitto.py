"""The one Mosquitto starter of the test suite (and of the benchmarks): a real broker per test.

``MosquittoBroker(...).start()`` writes its own ``mosquitto.conf`` (or runs one written elsewhere,
e.g. by :func:`fleet.broker_config.write_broker_config`), listens on a free loopback port,
captures the broker's log to ``mosquitto.log`` and is killed by ``stop()``. What callers need:

* tuning: the manager settings docs/FLEET_MQTT.md recommends (unlimited in-flight window, large
  queues, TCP_NODELAY) by default; ``None`` leaves a setting at Mosquitto's own default;
* ``tls``: the main listener speaks TLS (``mqtts://``), optionally requiring a client certificate;
* ``mtls``: a *second* listener on ``tls_port`` with mutual TLS, certificate CN as username;
* ``config_file``: a configuration written by someone else (ACL files, CRL, persistence dir
  and the like are then theirs), run as is on ``port``;
* ``workdir``: where the config and log live (kept); without it a private temporary directory
  is used and removed by ``stop()``;
* ``restart()`` on the same port, ``reload()`` (SIGHUP), ``log_text()``.

A missing ``mosquitto`` binary raises :class:`BrokerUnavailableError` from ``start()``;
:func:`start_or_skip` turns that into a skip, or a failure under ``EDGEOPS_REQUIRE_SERVICES=1``
(CI). A broker that is installed but does not start is :class:`BrokerStartError`, never a skip.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.services import free_port, need

__all__ = ["BrokerStartError", "BrokerUnavailableError", "MosquittoBroker", "TlsMaterial",
           "find_mosquitto", "free_port", "running_broker", "start_or_skip"]


class BrokerUnavailableError(RuntimeError):
    """No mosquitto binary here (skip, or fail under EDGEOPS_REQUIRE_SERVICES=1)."""


class BrokerStartError(RuntimeError):
    """mosquitto is installed but did not start with our config: a bug, never a skip."""


def find_mosquitto() -> str | None:
    """``$EDGEOPS_MOSQUITTO``, then ``mosquitto`` on PATH, then the usual sbin places."""
    for cand in (os.environ.get("EDGEOPS_MOSQUITTO"), shutil.which("mosquitto"),
                 "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


@dataclass(frozen=True)
class TlsMaterial:
    """A test PKI for the ``mtls`` listener: CA, broker certificate and one client's."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@dataclass
class MosquittoBroker:
    """Configuration of one throwaway broker; ``start()`` runs it, ``stop()`` kills it."""

    workdir: Path | None = None             # config + log; None: a temp dir removed by stop()
    port: int = 0                           # 0: a free port, chosen at start and kept
    host: str = "127.0.0.1"
    max_inflight_messages: int | None = 0   # 0 = unlimited (per client, outgoing QoS>0)
    max_queued_messages: int | None = 1_000_000  # per client, while its in-flight window is full
    max_queued_bytes: int | None = 0        # 0 = unlimited
    max_packet_size: int = 1024 * 1024      # bytes; chunks are 64 KiB by default
    tcp_nodelay: bool = True                # mosquitto's default is off (Nagle)
    sys_interval_s: int | None = 10         # how often $SYS counters are published
    tls: dict[str, str] | None = None       # {"cafile", "certfile", "keyfile"}: mqtts listener
    require_certificate: bool = False       # with ``tls``
    mtls: TlsMaterial | None = None         # a second, mutual-TLS listener on ``tls_port``
    tls_port: int | None = None
    extra_conf: list[str] = field(default_factory=list)
    config_file: Path | None = None         # run this config as is (it must listen on ``port``)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _tempdir: Path | None = field(default=None, init=False, repr=False)

    @classmethod
    def untuned(cls, workdir: Path | None = None, *, mtls: TlsMaterial | None = None
                ) -> MosquittoBroker:
        """Mosquitto's own queue, in-flight and Nagle defaults (what a plain device-side broker
        has), with the plain listener and optionally the ``mtls`` one."""
        return cls(workdir, max_inflight_messages=None, max_queued_messages=None,
                   max_queued_bytes=None, tcp_nodelay=False, sys_interval_s=None, mtls=mtls)

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def directory(self) -> Path:
        """Where the config and the log live (created on first use)."""
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            return self.workdir
        if self._tempdir is None:
            self._tempdir = Path(tempfile.mkdtemp(prefix="edgeops-mosquitto-"))
        return self._tempdir

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    def config_text(self) -> str:
        # Started as root, mosquitto drops to user "mosquitto", which cannot read pytest's
        # temporary files (certificates): it stays the user who runs the tests instead.
        lines = [f"user {getpass.getuser()}", "per_listener_settings false",
                 f"listener {self.port} {self.host}", "allow_anonymous true"]
        for name in ("max_inflight_messages", "max_queued_messages", "max_queued_bytes"):
            value = getattr(self, name)
            if value is not None:
                lines.append(f"{name} {value}")
        lines += [f"max_packet_size {self.max_packet_size}", "persistence false",
                  "log_dest stderr", "log_type error", "log_type warning"]
        if self.sys_interval_s is not None:
            lines.append(f"sys_interval {self.sys_interval_s}")
        if self.tcp_nodelay:
            lines.append("set_tcp_nodelay true")
        if self.tls:
            lines += [f"cafile {self.tls['cafile']}", f"certfile {self.tls['certfile']}",
                      f"keyfile {self.tls['keyfile']}",
                      f"require_certificate {'true' if self.require_certificate else 'false'}"]
        if self.mtls is not None:
            lines += [f"listener {self.tls_port} {self.host}", f"cafile {self.mtls.ca}",
                      f"certfile {self.mtls.server_cert}", f"keyfile {self.mtls.server_key}",
                      "require_certificate true", "use_identity_as_username true"]
        return "\n".join(lines + self.extra_conf) + "\n"

    def start(self, timeout_s: float = 10.0) -> MosquittoBroker:
        exe = find_mosquitto()
        if exe is None:
            raise BrokerUnavailableError("mosquitto is not installed (apt-get install mosquitto)")
        if self.config_file is not None and not self.port:
            raise ValueError("config_file given without the port it listens on: pass port=")
        self.port = self.port or free_port()
        if self.mtls is not None:
            self.tls_port = self.tls_port or free_port()
        conf = self.config_file
        if conf is None:
            conf = self.directory / "mosquitto.conf"
            conf.write_text(self.config_text())
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerStartError(f"mosquitto exited: {self.log_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(
                    (self.host, self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerStartError(f"mosquitto did not listen on port {self.port} within {timeout_s} s")

    def log_text(self) -> str:
        p = self.log_path
        return p.read_text(errors="replace") if p.exists() else ""

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def stop(self) -> None:
        """Kill the broker; a private temporary directory goes with it (a workdir stays)."""
        self._kill()
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

    def restart(self, timeout_s: float = 10.0, down_s: float = 0.0) -> None:
        """Kill and start again on the same port(s) after ``down_s`` (clients see a disconnect)."""
        self._kill()
        time.sleep(down_s)
        self.start(timeout_s)

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads its config (and CRL) for new connections."""
        assert self.proc is not None, "reload() of a broker that is not running"
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)


def start_or_skip(broker: MosquittoBroker) -> MosquittoBroker:
    """``broker.start()``; a missing binary skips the test (fails under EDGEOPS_REQUIRE_SERVICES=1)."""
    try:
        return broker.start()
    except BrokerUnavailableError:
        need("mosquitto", False, "apt-get install mosquitto")
        raise


@contextlib.contextmanager
def running_broker(**kwargs: object) -> Iterator[MosquittoBroker]:
    """A started broker for a ``with`` block (skips like :func:`start_or_skip`)."""
    broker = start_or_skip(MosquittoBroker(**kwargs))  # type: ignore[arg-type]
    try:
        yield broker
    finally:
        broker.stop()
