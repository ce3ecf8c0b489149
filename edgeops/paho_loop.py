"""Drive one paho client from an :class:`edgeops.netloop.NetLoop`: the agent's and the manager's.

Why it exists: paho's own loops wait with ``select()`` (no descriptor numbered 1024 or above)
and cost a thread per connection; :mod:`edgeops.netloop` replaces them. Feeding paho from that
loop through its external-loop API (``socket()``, ``loop_read()``, ``loop_write()``,
``loop_misc()``, ``want_write()`` and the ``on_socket_*`` hooks) is fiddly in the same way on
both sides, so it lives here once: :class:`PahoMember` is the loop's :class:`Member` for one
client. The agent (:mod:`device_agent.mqtt`, one shared loop per process) and the manager
(:mod:`fleet.mqtt.adapter`, one loop per connection) differ only in what the hooks do: how to
connect, how long to back off, what to record when something fails.

What the member does, on the loop thread unless said otherwise:

- connect on the loop's pool (the ``connect`` hook, blocking), then watch the socket;
- read (also what TLS decrypted but the selector cannot see), write while paho has packets
  queued, send keepalives, and notice a socket paho gave up on;
- after a lost connection, wait the ``next_delay`` hook's backoff and connect again, until
  :meth:`PahoMember.stop`, which sends DISCONNECT and waits for the socket to close.

**Only the loop thread touches a connected socket.** With ``on_socket_register_write`` set,
paho's ``publish``/``subscribe``/``ack`` from another thread never write: paho queues the packet
and calls the hook, which asks the loop to select the socket for writing. Without it, over TLS
such a write races the loop's reads and corrupts OpenSSL's state (``[SSL: BAD_LENGTH]``,
eclipse-paho/paho.mqtt.python #691). paho's (re)connect clears the outgoing queue, so callers
must hold ``wire`` (the lock the ``connect`` hook holds) around every paho call made off the
loop thread; the member holds it for its DISCONNECT.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from edgeops.netloop import NetLoop, Timer

__all__ = ["PahoMember"]

log = logging.getLogger(__name__)

_OK = MQTTErrorCode.MQTT_ERR_SUCCESS
# TLS reads in one go before the rest of the loop gets a turn (the rest are read right after)
_TLS_ROUNDS = 64


class PahoMember:
    """One paho client served by a :class:`NetLoop` (implements its ``Member`` protocol).

    ``client`` gets its ``on_socket_close`` and ``on_socket_register_write`` /
    ``on_socket_unregister_write`` hooks set here; leave them alone. The hooks:

    - ``connect()``: the blocking TCP (+TLS) connect with CONNECT queued (``client.connect``
      or ``client.reconnect``), holding ``wire``; runs on the loop's pool and raises
      :class:`OSError` (TLS and timeouts included) or :class:`ValueError` on failure;
    - ``connect_failed(exc)`` and ``loop_failed(exc)``: record why (the owner's ``last_error``);
    - ``next_delay()``: seconds to wait before the next connect (the owner counts attempts and
      resets its count in ``on_connect``).

    ``stopping`` is the owner's "closing" event: set by :meth:`stop`, cleared by :meth:`start`;
    the owner's ``connected`` event is cleared whenever the socket is lost.
    ``name`` begins the warning when a connection has to be dropped, e.g. "MQTT connection to
    mqtt://host:1883".
    """

    def __init__(self, client: paho.Client, *, name: str, wire: AbstractContextManager[Any],
                 stopping: threading.Event, connected: threading.Event,
                 connect: Callable[[], object],
                 connect_failed: Callable[[Exception], None],
                 loop_failed: Callable[[BaseException], None],
                 next_delay: Callable[[], float]) -> None:
        self.client = client
        self.name = name
        self.stopping = stopping
        self.connected = connected
        self.net: NetLoop | None = None  # while started
        self._wire = wire
        self._connect_hook = connect
        self._connect_failed = connect_failed
        self._loop_failed = loop_failed
        self._next_delay = next_delay
        self._sock: Any = None           # the socket the loop watches (loop thread only)
        self._timer: Timer | None = None  # backoff before the next connect (loop thread only)
        self.idle = threading.Event()    # no socket, no connect under way, no timer pending
        self.idle.set()
        # sent with the DISCONNECT of stop(): e.g. SessionExpiryInterval 0 to end the session
        self.disconnect_properties: Any = None
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    # -- any thread -------------------------------------------------------------------------
    def start(self, net: NetLoop) -> None:
        """Join ``net`` and connect in the background (and again whenever the connection is lost)."""
        self.net = net
        self.stopping.clear()
        self.idle.clear()
        net.add_member(self)
        net.run_blocking(self._connect)

    def stop(self, timeout_s: float) -> None:
        """Send DISCONNECT (after what paho has queued), wait for the socket to close, leave the loop.

        A connect under way finishes first (paho's ``connect_timeout`` at most); a connection
        that has not closed ``timeout_s`` after that is dropped. Called on the loop thread it
        does not wait.
        """
        net = self.net
        if net is None:
            return
        self.stopping.set()
        net.call_soon(self._close_on_stop)
        if not net.in_loop() and not self.idle.wait(timeout_s + self.client.connect_timeout):
            log.warning("%s did not close in time; dropping it", self.name)
            net.call_soon(self._drop)
            self.idle.wait(1.0)
        net.remove_member(self)
        self.net = None

    # -- connect pool -------------------------------------------------------------------------
    def _connect(self) -> None:
        net = self.net
        if net is None:
            return
        if self.stopping.is_set():
            net.call_soon(self._settle)
            return
        try:
            self._connect_hook()
        except (OSError, ValueError) as exc:     # ssl.SSLError and timeouts are OSErrors
            self._connect_failed(exc)
            net.call_soon(self._retry_later)
            return
        net.call_soon(self._attach)

    # -- loop thread (NetLoop's Member protocol) -----------------------------------------------
    def _attach(self) -> None:
        sock = self.client.socket()
        if sock is None:                 # closed between connect and now
            self._lost()
            return
        self._sock = sock
        closing = self.stopping.is_set()
        self._net_().watch(sock, self, write=True if closing else self.client.want_write())
        if closing:
            self._close_on_stop()

    def on_io(self, readable: bool, writable: bool) -> None:
        """The socket can be read and/or written."""
        c, sock = self.client, self._sock
        if sock is None or c.socket() is not sock:
            return                       # an event for a socket already given up
        rc = _OK
        if readable:
            rc = c.loop_read()
            # TLS may hold decrypted bytes the selector cannot see: read them too, and if many
            # remain come back after the loop's other work (the selector will not report them:
            # a burst could otherwise wait in OpenSSL for the next keepalive)
            rounds = 0
            while rc == _OK and c.socket() is sock and isinstance(sock, ssl.SSLSocket) and \
                    sock.pending():
                if rounds == _TLS_ROUNDS:
                    self._net_().call_soon(lambda: self.on_io(True, False))
                    break
                rc = c.loop_read()
                rounds += 1
        if rc == _OK and writable and c.socket() is sock:
            rc = c.loop_write()
        if rc != _OK or c.socket() is not sock:
            self._lost()

    def on_tick(self) -> None:
        """Keepalive: PINGREQ, and giving up on a broker that stopped answering."""
        if self._sock is None or self.client.socket() is not self._sock:
            return
        if self.client.loop_misc() != _OK or self.client.socket() is not self._sock:
            self._lost()

    def on_error(self, exc: BaseException) -> None:
        """A paho call on the loop thread raised: drop the connection, reconnect later."""
        self._loop_failed(exc)
        self._drop()

    def _drop(self) -> None:
        """Give up on the socket without reading from it again, and without a DISCONNECT.

        paho has no public call that abandons a socket (its own close runs only when a read or
        write fails, and a read could hand the packet whose callback just raised to that callback
        again), so the member closes the socket it was given by ``socket()``, after unwatching
        it: its number may be reused at once. paho keeps the closed object until the next
        ``connect()``/``reconnect()``, whose own close of it does nothing; meanwhile nothing
        touches it (the loop has forgotten it; what other threads queue waits, and a QoS > 0
        message is sent again after the reconnect, as for any lost connection).
        """
        sock = self.client.socket()
        if sock is not None:
            self._net_().unwatch(sock)
            try:
                sock.close()
            except OSError as exc:       # the kernel's complaint; the descriptor is released anyway
                log.debug("%s: closing the dropped socket: %s", self.name, exc)
        self._lost()

    def _lost(self) -> None:
        """The socket is gone: reconnect after a backoff, or settle when stopping."""
        if self._sock is not None:
            self._net_().unwatch(self._sock)
            self._sock = None
        self.connected.clear()
        if self.stopping.is_set():
            self._settle()
        else:
            self._retry_later()

    def _retry_later(self) -> None:
        if self.stopping.is_set():
            self._settle()
            return
        self._timer = self._net_().call_later(self._next_delay(), self._backoff_done)

    def _backoff_done(self) -> None:
        self._timer = None
        if self.stopping.is_set():
            self._settle()
        else:
            self._net_().run_blocking(self._connect)

    def _close_on_stop(self) -> None:
        """Send DISCONNECT if a socket is open (paho closes it once written)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._settle()
            return
        if self._sock is None:
            return           # a connect is under way: _connect/_attach settle it
        with self._wire:
            self.client.disconnect(properties=self.disconnect_properties)
        if self.client.socket() is not self._sock:
            self._lost()

    def _settle(self) -> None:
        if self._sock is None and self._timer is None:
            self.idle.set()

    def _net_(self) -> NetLoop:
        assert self.net is not None
        return self.net

    # -- paho's socket hooks (any thread) --------------------------------------------------------
    def _on_socket_close(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        net = self.net
        if net is not None and net.in_loop():
            net.unwatch(sock)        # before paho closes it: its number may be reused

    def _on_register_write(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        net = self.net
        if net is not None and net.in_loop() and not client.want_write():
            # paho also "registers" for writing with nothing queued (paho 2.2: when a TLS read
            # raises SSLWantWriteError). Left set, its flag keeps the next publish or ack from
            # calling this hook, so the loop would not select the socket for writing and the
            # packet would wait. paho clears the flag itself when loop_write() finds nothing
            # left to write, so call that once the current read is over (not inside it): it
            # also writes a packet another thread queued meanwhile, whose hook the flag skipped.
            net.call_soon(lambda: self._write_now(sock))
        self._sync_write(sock)

    def _write_now(self, sock: Any) -> None:
        """Loop thread: write what paho has queued for ``sock`` (if still ours), which also
        makes paho forget a stale "registered for writing" flag."""
        if self._sock is None or sock is not self._sock or self.client.socket() is not sock:
            return
        if self.client.loop_write() != _OK or self.client.socket() is not sock:
            self._lost()

    def _on_unregister_write(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        # loop_write on the loop thread may see an empty queue just before another thread
        # queues a packet (whose publish then skips the register hook): both look at the queue
        self._sync_write(sock)

    def _sync_write(self, sock: Any) -> None:
        """Select ``sock`` for writing exactly while paho has packets queued for it."""
        net = self.net
        if net is None:
            return
        if net.in_loop():
            net.set_write(sock, self.client.want_write())
        else:
            c = self.client
            net.call_soon(lambda: net.set_write(sock, c.want_write()))
