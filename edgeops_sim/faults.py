"""Fault injection for the simulator: which devices suffer what, and the slow-link proxy.

Why it exists: a rollout engine is judged by what it does when devices misbehave. The faults:

* ``drop``: the device's TCP connection to the broker is cut now and then (no DISCONNECT, so
  the broker fires its Last Will); the agent reconnects with its back-off.
* ``slow``: the device reaches the broker through :class:`SlowLink`, a loopback TCP proxy that
  delays every chunk it forwards (a congested cellular link).
* ``powercut``: the device runs as its own agent process, killed with SIGKILL at a random
  instant after it accepted a deploy command (mid-download or mid-install), then restarted:
  the A/B slots and the install state machine must recover.
* ``skew``: the device's clock is off by up to ``skew_s`` (either way), which the command
  expiry and report timestamps must tolerate.

:func:`parse_faults` and :class:`FaultPlan` are pure; the proxy is the only I/O here.
"""

from __future__ import annotations

import hashlib
import select
import socket
import threading
import time
from dataclasses import dataclass

from edgeops.errors import UsageError

__all__ = ["FAULTS", "FaultPlan", "SlowLink", "parse_faults"]

FAULTS = ("drop", "slow", "powercut", "skew")


def parse_faults(text: str | None) -> frozenset[str]:
    """``drop,slow,powercut,skew`` (any subset, ``none`` or empty for none)."""
    if not text or text.strip() in ("", "none"):
        return frozenset()
    out = {p.strip() for p in text.split(",") if p.strip()}
    bad = sorted(out - set(FAULTS))
    if bad:
        raise UsageError(f"unknown fault(s) {', '.join(bad)}",
                         hint=f"choose from {','.join(FAULTS)}")
    return frozenset(out)


@dataclass(frozen=True)
class FaultPlan:
    """Which devices get which fault: a stable ``share`` of the fleet per fault (by id hash)."""

    faults: frozenset[str] = frozenset()
    share: float = 0.1                 # fraction of devices affected by each fault
    drop_every_s: float = 20.0         # a dropping device loses its link about this often
    slow_delay_s: float = 0.05         # added per forwarded chunk on a slow link
    skew_s: float = 90.0               # clock offset of a skewed device, either sign
    powercut_after_s: float = 1.5      # after a deploy was accepted, cut within this

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise UsageError("--fault-share must be in (0, 1]")

    def has(self, device_id: str, fault: str) -> bool:
        if fault not in self.faults:
            return False
        h = hashlib.sha256(f"{fault}/{device_id}".encode()).digest()
        return int.from_bytes(h[:4], "big") / 2**32 < self.share

    def skew_for(self, device_id: str) -> float:
        if not self.has(device_id, "skew"):
            return 0.0
        h = hashlib.sha256(f"skew-sign/{device_id}".encode()).digest()
        return self.skew_s if h[0] % 2 else -self.skew_s


class SlowLink:
    """A loopback TCP proxy to ``target`` that sleeps ``delay_s`` before forwarding each chunk.

    One thread accepts; each connection gets one pump thread per direction. ``close()`` stops
    accepting and closes every socket, which ends the pumps.
    """

    def __init__(self, target: tuple[str, int], delay_s: float) -> None:
        self.target = target
        self.delay_s = delay_s
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        t = threading.Thread(target=self._accept, name=f"slowlink-{self.port}", daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            r, _, _ = select.select([self._server], [], [], 0.2)
            if not r:
                continue
            try:
                client, _addr = self._server.accept()
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                continue
            with self._lock:
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                t = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                r, _, _ = select.select([src], [], [], 0.2)
                if not r:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                time.sleep(self.delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed.set()
        self._server.close()
        with self._lock:
            for s in self._socks:
                try:
                    s.close()
                except OSError:
                    pass
        for t in self._threads:
            t.join(2)
