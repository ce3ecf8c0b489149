"""A real fleet manager for tests: FleetServer's app under uvicorn on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from edgeops.keys import KeyStore
from fleet.server import FleetServer, ServeOptions

__all__ = ["LiveFleet", "free_port", "live_fleet"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveFleet:
    def __init__(self, server: FleetServer, url: str, admin: str) -> None:
        self.server = server
        self.url = url
        self.admin = admin


@contextmanager
def live_fleet(keys: KeyStore, tmp: Path, *, db: str | None = None, broker: str | None = None,
               require_blessing: bool = False, tick_s: float = 0.2) -> Iterator[LiveFleet]:
    port = free_port()
    opts = ServeOptions(db=db or f"sqlite:///{tmp / 'fleet.db'}", listen=f"127.0.0.1:{port}",
                        data=tmp / "data", broker=broker, keys_home=keys.home,
                        require_blessing=require_blessing, tick_s=tick_s)
    server = FleetServer(opts)
    # a second manager on the same database finds the admin token already made
    admin = server.admin_token or (opts.data / "admin.token").read_text().strip()
    uv = uvicorn.Server(uvicorn.Config(server.app, host="127.0.0.1", port=port,
                                       log_level="warning", lifespan="off"))
    server.start_background()
    t = threading.Thread(target=uv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield LiveFleet(server, f"http://127.0.0.1:{port}", admin)
    finally:
        uv.should_exit = True
        t.join(timeout=10)
        server.stop()
