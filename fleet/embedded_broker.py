"""An MQTT broker the demo and the simulator can start themselves, on loopback.

Why it exists: ``edgeops demo`` must run on a machine with nothing installed beyond the
package. When a ``mosquitto`` binary is present it is preferred (MQTT 5, shared subscriptions,
thousands of messages per second); otherwise the broker is amqtt (the ``demo`` extra), run in
this process on its own asyncio thread. amqtt speaks MQTT 3.1.1 only, so :attr:`mqtt_version`
and :attr:`shared_subscriptions` tell the clients what to use (the manager worker then
subscribes without ``$share/``: fine for the demo's single worker).

Both listen on 127.0.0.1 only, allow anonymous clients (loopback demo, no TLS) and are stopped
by :meth:`EmbeddedBroker.stop` (also on ``with`` exit), leaving no process or thread behind.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edgeops.errors import TransportError, UsageError

__all__ = ["BrokerKind", "EmbeddedBroker", "find_mosquitto"]

log = logging.getLogger(__name__)

BrokerKind = str          # "mosquitto" | "amqtt"
_KINDS = ("auto", "mosquitto", "amqtt")


def find_mosquitto() -> str | None:
    """The mosquitto binary on PATH or in /usr/sbin (Debian installs it there), else None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    p = Path("/usr/sbin/mosquitto")
    return str(p) if p.exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class EmbeddedBroker:
    """Start with :meth:`start` (returns the URL), stop with :meth:`stop`; a context manager.

    ``kind``: ``auto`` (mosquitto if found, else amqtt), ``mosquitto`` or ``amqtt``.
    """

    def __init__(self, kind: str = "auto", port: int | None = None,
                 start_timeout_s: float = 10.0) -> None:
        if kind not in _KINDS:
            raise UsageError(f"broker kind {kind!r} is not one of {', '.join(_KINDS)}")
        self.requested = kind
        self.port = port or _free_port()
        self.start_timeout_s = start_timeout_s
        self.log_type = "error"                 # mosquitto's log_type (e.g. "all" to debug)
        self.log_path: Path | None = None
        self.kind: BrokerKind | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def mqtt_version(self) -> int:
        """5 for mosquitto, 4 (3.1.1) for amqtt."""
        return 5 if self.kind == "mosquitto" else 4

    @property
    def shared_subscriptions(self) -> bool:
        return self.kind == "mosquitto"

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> str:
        binary = find_mosquitto() if self.requested in ("auto", "mosquitto") else None
        if self.requested == "mosquitto" and binary is None:
            raise UsageError("no mosquitto binary found (PATH, /usr/sbin)",
                             hint="install mosquitto or use the embedded amqtt broker")
        if binary is not None:
            self._start_mosquitto(binary)
        else:
            self._start_amqtt()
        return self.url

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None
        if self._loop is not None and self._thread is not None:
            loop, broker = self._loop, self._broker
            if broker is not None:
                fut = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
                try:
                    fut.result(5)
                except Exception:  # shutting down anyway; the loop stop below ends it
                    log.debug("amqtt shutdown raised", exc_info=True)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(5)
            self._thread = None
            self._loop = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- mosquitto -----------------------------------------------------------------------
    def _start_mosquitto(self, binary: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="edgeops-broker-")
        conf = Path(self._tmp.name) / "mosquitto.conf"
        self.log_path = Path(self._tmp.name) / "mosquitto.log"
        import getpass

        # run as us: mosquitto started as root would switch to user "mosquitto", who cannot
        # write the log in our private temp dir
        conf.write_text(f"user {getpass.getuser()}\n"
                        f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                        "persistence false\nmax_inflight_messages 0\nmax_queued_messages 100000\n"
                        f"message_size_limit 0\nlog_dest file {self.log_path}\n"
                        f"log_type {self.log_type}\n")
        # the log goes to a file: a pipe nobody reads would stall the broker once full
        self._proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        if not _wait_port(self.port, self.start_timeout_s):
            err = b""
            if self.log_path.exists():
                err = self.log_path.read_bytes()[-2000:]
            self.stop()
            raise TransportError(f"mosquitto did not listen on 127.0.0.1:{self.port}: "
                                 f"{err.decode(errors='replace').strip() or 'no answer'}",
                                 hint="is the port taken? try again or pass --broker")
        self.kind = "mosquitto"

    # -- amqtt ---------------------------------------------------------------------------
    def _start_amqtt(self) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError:
            raise UsageError("no MQTT broker available: mosquitto is not installed and the "
                             "amqtt package is missing",
                             hint="pip install 'edgeops[demo]', install mosquitto, or pass "
                                  "--broker mqtt://HOST:PORT") from None
        config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}",
                                            "max_connections": 0}},
                  "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                              {"allow_anonymous": True}}}
        # amqtt logs every connection at INFO; keep the demo's terminal readable
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        logging.getLogger("transitions").setLevel(logging.WARNING)

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._broker = Broker(config, loop=loop)
                loop.run_until_complete(self._broker.start())
            except BaseException as exc:  # reported to start() below
                self._error = exc
                self._started.set()
                loop.close()
                return
            self._started.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not self._started.wait(self.start_timeout_s) or self._error is not None:
            err = self._error
            self._thread.join(1)
            self._thread = None
            self._loop = None
            raise TransportError(f"the embedded amqtt broker did not start on port "
                                 f"{self.port}: {err or 'timeout'}",
                                 hint="pick another port or pass --broker")
        self.kind = "amqtt"
