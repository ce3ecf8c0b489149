"""The slow-link proxy forwards bytes both ways, adds its delay, and closes cleanly."""

from __future__ import annotations

import socket
import threading
import time

from edgeops_sim.faults import SlowLink


def _echo_server() -> tuple[socket.socket, threading.Thread]:
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def test_slow_link_forwards_with_delay_and_closes() -> None:
    srv, t = _echo_server()
    link = SlowLink(("127.0.0.1", srv.getsockname()[1]), delay_s=0.1)
    try:
        with socket.create_connection(("127.0.0.1", link.port), timeout=5) as c:
            t0 = time.monotonic()
            c.sendall(b"hello")
            got = b""
            while len(got) < 5:
                got += c.recv(100)
            rtt = time.monotonic() - t0
        assert got == b"hello"
        assert rtt >= 0.2            # delayed once each way
        assert link.url == f"mqtt://127.0.0.1:{link.port}"
    finally:
        link.close()
        srv.close()
    t.join(5)
    with socket.socket() as s:      # the listening socket is gone
        assert s.connect_ex(("127.0.0.1", link.port)) != 0
