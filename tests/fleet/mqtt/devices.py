"""Simulated devices for the manager's tests and benchmarks: real paho clients on a real broker.

Not the device agent: a minimal speaker of the device side of docs/PROTOCOL.md (status with Last
Will, state, telemetry, fetch, chunk reassembly with per-chunk and whole-artifact hashing) so
the manager can be exercised before and independently of ``device_agent``. Callbacks only
collect; assertions happen in the tests.
"""

from __future__ import annotations

import hashlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgeops.protocol import (
    FetchRequest,
    MessageError,
    StatusMessage,
    decode_chunk,
    topics,
)

__all__ = ["DeviceLoop", "Download", "SimDevice", "missing_ranges"]


def missing_ranges(have: Iterable[int], count: int) -> list[tuple[int, int]]:
    """[start, end) ranges of chunk indices not in ``have``."""
    got = set(have)
    out: list[tuple[int, int]] = []
    start: int | None = None
    for i in range(count):
        if i not in got and start is None:
            start = i
        elif i in got and start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, count))
    return out


class Download:
    """Chunks of one artifact as they arrive; ``done`` once every index verified."""

    def __init__(self, sha256: str) -> None:
        self.sha256 = sha256
        self.chunks: dict[int, bytes] = {}
        self.count: int | None = None
        self.size: int | None = None
        self.bad = 0
        self.dupes = 0
        self.done = threading.Event()
        self.finished_at: float | None = None

    def add(self, payload: bytes, max_chunk: int) -> None:
        try:
            c = decode_chunk(payload, max_chunk)
        except MessageError:
            self.bad += 1
            return
        if c.artifact != self.sha256:
            self.bad += 1
            return
        if c.index in self.chunks:
            self.dupes += 1
            return
        self.count, self.size = c.count, c.total_size
        self.chunks[c.index] = c.data
        if len(self.chunks) == self.count and not self.done.is_set():
            data = self.data()
            if hashlib.sha256(data).hexdigest() == self.sha256 and len(data) == self.size:
                self.finished_at = time.monotonic()
                self.done.set()
            else:
                self.bad += 1
                self.chunks.clear()

    def data(self) -> bytes:
        return b"".join(self.chunks[i] for i in sorted(self.chunks))

    def missing(self) -> list[tuple[int, int]] | None:
        if self.count is None:
            return None
        return missing_ranges(self.chunks, self.count)


class SimDevice:
    """One device's MQTT session (its own client id, Last Will and network thread)."""

    def __init__(self, device_id: str, broker_host: str, broker_port: int,
                 max_chunk: int = 1024 * 1024, connect: bool = True) -> None:
        self.device_id = device_id
        self.max_chunk = max_chunk
        self.downloads: dict[str, Download] = {}
        self.received: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{device_id}",
                        protocol=MQTTProtocolVersion.MQTTv5)
        c.max_inflight_messages_set(1000)
        c.will_set(topics.device_topic(device_id, "status"),
                   StatusMessage(device_id, False, "sim", 0.0).to_bytes(), qos=1, retain=True)
        c.on_message = self._on_message
        c.on_socket_open = lambda cl, ud, s: s.setsockopt(socket.IPPROTO_TCP,
                                                          socket.TCP_NODELAY, 1)
        self.connected = threading.Event()
        c.on_connect = lambda *a: self.connected.set()
        self.client = c
        self.host, self.port = broker_host, broker_port
        if connect:
            self.connect()

    def connect_external(self) -> None:
        """Open the connection without a network thread (a :class:`DeviceLoop` drives it)."""
        self.client.connect(self.host, self.port, keepalive=30)

    def connect(self, timeout_s: float = 10.0) -> None:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(timeout_s):
            raise TimeoutError(f"{self.device_id} did not connect")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if len(parts) == 5 and parts[2] == "artifacts":
            dl = self.downloads.get(parts[3])
            if dl is not None:
                dl.add(msg.payload, self.max_chunk)
            return
        with self._lock:
            self.received.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def publish(self, channel: str, payload: bytes, retain: bool = False) -> paho.MQTTMessageInfo:
        return self.client.publish(topics.device_topic(self.device_id, channel), payload, qos=1,
                                   retain=retain)

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe(topic, qos=1)
        done.wait(5)

    def start_download(self, sha256: str, missing: list[tuple[int, int]] | None = None
                       ) -> Download:
        self.subscribe(topics.artifact_chunks(sha256))
        return self.fetch(sha256, missing)

    def fetch(self, sha256: str, missing: list[tuple[int, int]] | None = None) -> Download:
        """Ask for the artifact (already subscribed to its chunks); no round trip waited for."""
        dl = self.downloads.setdefault(sha256, Download(sha256))
        self.publish("fetch", FetchRequest(self.device_id, sha256,
                                           tuple(missing) if missing is not None else None
                                           ).to_bytes())
        return dl

    def resume(self, sha256: str) -> None:
        dl = self.downloads[sha256]
        self.publish("fetch", FetchRequest(self.device_id, sha256,
                                           tuple(dl.missing() or []) or None).to_bytes())

    def stop_download(self, sha256: str) -> None:
        self.client.unsubscribe(topics.artifact_chunks(sha256))

    def messages_on(self, channel: str) -> list[tuple[bytes, bool]]:
        topic = topics.device_topic(self.device_id, channel)
        with self._lock:
            return [(p, r) for t, p, r in self.received if t == topic]


class DeviceLoop:
    """Drives many :class:`SimDevice` connections from one thread with ``poll``.

    One paho network thread per simulated device means hundreds of threads fighting for the
    GIL, which makes the simulator, not the system under test, the bottleneck.
    """

    def __init__(self, tick: Callable[[], None] | None = None, tick_s: float = 0.5) -> None:
        self.tick, self.tick_s = tick, tick_s      # run in the loop thread (paho is not
        self.devices: list[SimDevice] = []          # safe to drive from two threads)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, dev: SimDevice) -> None:
        dev.connect_external()
        self.devices.append(dev)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="device-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        for d in self.devices:
            d.client.disconnect()
        time.sleep(0.2)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        poller = select.poll()
        by_fd: dict[int, SimDevice] = {}
        for d in self.devices:
            sock = d.client.socket()
            if sock is not None:
                fd = sock.fileno()
                by_fd[fd] = d
                poller.register(fd, select.POLLIN)
        writing: set[int] = set()
        last_misc = last_tick = time.monotonic()
        while not self._stop.is_set():
            for fd, d in by_fd.items():
                want = d.client.want_write()
                if want and fd not in writing:
                    poller.modify(fd, select.POLLIN | select.POLLOUT)
                    writing.add(fd)
                elif not want and fd in writing:
                    poller.modify(fd, select.POLLIN)
                    writing.discard(fd)
            for fd, ev in poller.poll(10):
                d = by_fd[fd]
                try:
                    if ev & (select.POLLIN | select.POLLERR | select.POLLHUP):
                        for _ in range(64):        # drain what is buffered, not one packet
                            if d.client.loop_read() != 0 or not _readable(fd):
                                break
                    if ev & select.POLLOUT:
                        d.client.loop_write()
                except OSError:                    # closed under us while stopping
                    poller.unregister(fd)
                    writing.discard(fd)
                    by_fd = {k: v for k, v in by_fd.items() if k != fd}
            now = time.monotonic()
            if self.tick is not None and now - last_tick > self.tick_s:
                self.tick()
                last_tick = now
            if now - last_misc > 1.0:
                for d in self.devices:
                    d.client.loop_misc()
                last_misc = now


def _readable(fd: int) -> bool:
    r, _, _ = select.select([fd], [], [], 0)
    return bool(r)
