"""One network thread for many MQTT connections: a selector loop, timers and a connect pool.

Why it exists: paho's own loops (``loop_start()``/``loop()``) give every connection a thread
and wait with ``select()``, which cannot watch a descriptor numbered 1024 or above. A process
running a hundred agents (the fleet simulator, the delivery benchmark) then loses connections
for ever, and hundreds of network threads fight over one GIL; a manager process with a
thousand descriptors open (HTTP clients, database connections, files) cannot (re)connect to
its broker at all. Used by the agent (:mod:`device_agent.mqtt`, one loop per process) and the
manager (:mod:`fleet.mqtt.adapter`, one loop per connection). Here one thread waits on a
:mod:`selectors` selector (epoll on Linux: no descriptor limit) for every connection that
registered with it, and runs their timers (reconnect backoff, keepalive ticks).

What it does not do: blocking work. ``paho.Client.connect()`` resolves, connects and shakes
hands (TLS) synchronously, so connects run on a small pool (:meth:`NetLoop.run_blocking`) and
hand the ready socket back with :meth:`NetLoop.call_soon`.

Threading contract: :meth:`call_soon`, :meth:`call_later`, :meth:`run_blocking`,
:meth:`add_member` and :meth:`remove_member` may be called from any thread; :meth:`watch`,
:meth:`set_write` and :meth:`unwatch` only on the loop thread (:meth:`in_loop`), which is also
where every :class:`Member` callback runs. A callback that raises is logged and the loop goes
on; its member is told through :meth:`Member.on_error`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

__all__ = ["Member", "NetLoop", "Timer"]

log = logging.getLogger(__name__)


class Member(Protocol):
    """What a connection served by the loop implements (all called on the loop thread)."""

    def on_io(self, readable: bool, writable: bool) -> None:
        """Its socket is ready."""

    def on_tick(self) -> None:
        """About once per ``tick_s``: keepalive and other housekeeping."""

    def on_error(self, exc: BaseException) -> None:
        """One of its callbacks raised ``exc``; the loop logged it and carries on."""


class Timer:
    """A :meth:`NetLoop.call_later` handle; :meth:`cancel` is safe from any thread."""

    __slots__ = ("cancelled", "fn", "when")

    def __init__(self, when: float, fn: Callable[[], None]) -> None:
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class NetLoop:
    """A selector thread shared by many connections (see the module docstring)."""

    _shared: NetLoop | None = None
    _shared_lock = threading.Lock()

    def __init__(self, name: str = "mqtt-net", *, connect_threads: int = 4,
                 tick_s: float = 1.0) -> None:
        self.name = name
        self.tick_s = tick_s
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._calls: deque[Callable[[], None]] = deque()
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._members: dict[int, Member] = {}
        self._woken = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=connect_threads,
                                        thread_name_prefix=f"{name}-connect")

    @classmethod
    def shared(cls) -> NetLoop:
        """The process's loop, started on first use (agents in one process share it)."""
        with cls._shared_lock:
            if cls._shared is None or cls._shared._closed:
                cls._shared = NetLoop()
            return cls._shared

    @classmethod
    def close_shared_if_idle(cls, timeout_s: float = 5.0) -> bool:
        """Stop the process's shared loop and its connect threads if no connection uses it.

        For a process that is done with MQTT (the demo after its fleet stopped, a test): a later
        :meth:`shared` starts a fresh loop. False, and nothing stopped, while a member remains.
        """
        with cls._shared_lock:
            loop = cls._shared
            if loop is None or loop._closed:
                return True
            with loop._lock:
                if loop._members:
                    return False
            cls._shared = None
        loop.close(timeout_s)
        loop._pool.shutdown(wait=True)
        return True

    @property
    def closed(self) -> bool:
        return self._closed

    # -- any thread ------------------------------------------------------------------------
    def in_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop thread, in order with other calls."""
        with self._lock:
            if self._closed:
                return
            self._calls.append(fn)
            self._ensure_thread()
            wake = not self._woken and not self.in_loop()
            self._woken = self._woken or wake
        if wake:
            self._wake()

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> Timer:
        """Run ``fn`` on the loop thread after ``delay_s`` seconds unless cancelled."""
        timer = Timer(time.monotonic() + max(0.0, delay_s), fn)
        with self._lock:
            if self._closed:
                timer.cancelled = True
                return timer
            heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
            self._ensure_thread()
            wake = not self._woken and not self.in_loop()
            self._woken = self._woken or wake
        if wake:
            self._wake()
        return timer

    def run_blocking(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` (a blocking connect) on the connect pool; exceptions are logged."""
        def guarded() -> None:
            try:
                fn()
            except Exception:
                log.exception("%s: blocking call failed", self.name)
        with self._lock:
            if self._closed:
                return
            self._pool.submit(guarded)

    def add_member(self, member: Member) -> None:
        """Start ticking ``member`` (its :meth:`Member.on_tick` runs every ``tick_s``)."""
        with self._lock:
            self._members[id(member)] = member
            self._ensure_thread()

    def remove_member(self, member: Member) -> None:
        with self._lock:
            self._members.pop(id(member), None)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and the pool (a private loop in tests; the shared one lives on)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if thread is None:
            # the thread closes these as it ends; a loop that never ran must do it here, or its
            # descriptors stay open until a garbage collection frees them at a random moment
            self._release()

    def _release(self) -> None:
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- loop thread only --------------------------------------------------------------------
    def watch(self, sock: Any, member: Member, *, write: bool) -> None:
        """Select ``sock`` for reading (and writing when ``write``) on behalf of ``member``."""
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
        fd = sock.fileno()
        old = self._sel.get_map().get(fd)
        if old is not None:          # a closed socket's number, reused by the kernel
            self._sel.unregister(old.fileobj)
        self._sel.register(sock, events, member)

    def set_write(self, sock: Any, write: bool) -> None:
        """Also wait for ``sock`` to be writable, or stop waiting; no-op if not watched."""
        try:
            key = self._sel.get_key(sock)
        except (KeyError, ValueError):
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
        if key.events != events:
            self._sel.modify(sock, events, key.data)

    def unwatch(self, sock: Any) -> None:
        """Forget ``sock`` (call before closing it); no-op if not watched."""
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass

    # -- internals -----------------------------------------------------------------------------
    def _ensure_thread(self) -> None:           # with self._lock held
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass                                 # a byte is already waiting, or closed

    def _run(self) -> None:
        next_tick = time.monotonic() + self.tick_s
        while True:
            with self._lock:
                if self._closed:
                    break
                now = time.monotonic()
                due = self._timers[0][0] if self._timers else next_tick
                timeout = 0.0 if self._calls else max(0.0, min(due, next_tick) - now)
            try:
                ready = self._sel.select(timeout)
            except (OSError, ValueError):       # never expected; do not let it end the loop
                log.exception("%s: select failed", self.name)
                time.sleep(0.1)
                ready = []
            for key, mask in ready:
                if key.data is None:
                    self._drain_wake()
                    continue
                self._guard(key.data, key.data.on_io, bool(mask & selectors.EVENT_READ),
                            bool(mask & selectors.EVENT_WRITE))
            self._run_calls()
            self._run_timers()
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + self.tick_s
                with self._lock:
                    members = list(self._members.values())
                for m in members:
                    self._guard(m, m.on_tick)
        self._release()

    def _drain_wake(self) -> None:
        # Read first, then clear the flag. The other order loses wake-ups: a call_soon() between
        # the two sets the flag again and sends a byte that the read then swallows, leaving the
        # flag set with no byte pending, so no later call_soon() wakes the loop and every call
        # from another thread (a publish, an ack) waited for the next tick, for good. Cleared
        # after the read, a call queued meanwhile is run by this turn's _run_calls().
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        with self._lock:
            self._woken = False

    def _run_calls(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, deque()
        for fn in calls:
            try:
                fn()
            except Exception:
                log.exception("%s: a scheduled call failed", self.name)

    def _run_timers(self) -> None:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > now:
                    return
                timer = heapq.heappop(self._timers)[2]
            if timer.cancelled:
                continue
            try:
                timer.fn()
            except Exception:
                log.exception("%s: a timer failed", self.name)

    def _guard(self, member: Member, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            log.exception("%s: connection callback failed", self.name)
            try:
                member.on_error(exc)
            except Exception:
                log.exception("%s: handling a connection error failed", self.name)


def _forget_shared_after_fork() -> None:
    # a forked child has no loop thread: its first connection starts a fresh loop
    NetLoop._shared = None
    NetLoop._shared_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_shared_after_fork)
