"""Shared pieces of the fleet MQTT benchmarks: versions, machine facts, result files, $SYS."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

RESULTS = Path(__file__).resolve().parent / "results"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "paho-mqtt": paho.__version__ if hasattr(
        paho, "__version__") else "", "sqlite": sqlite3.sqlite_version}
    import paho.mqtt as pm

    out["paho-mqtt"] = pm.__version__
    try:
        v = subprocess.run(["/usr/sbin/mosquitto", "-h"], capture_output=True, text=True,
                           timeout=5).stdout.splitlines()[0]
        out["mosquitto"] = v.replace("mosquitto version ", "")
    except (OSError, IndexError, subprocess.TimeoutExpired):
        out["mosquitto"] = "unknown"
    try:
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres",
                             connect_timeout=3) as c:
            row = c.execute("SHOW server_version").fetchone()
            out["postgresql"] = str(row[0]) if row else "unknown"
        out["psycopg"] = psycopg.__version__
    except Exception:
        out["postgresql"] = "unavailable"
    return out


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_avg_at_start": os.getloadavg()}


def write_results(name: str, data: dict[str, Any], table: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (RESULTS / f"{name}.md").write_text(table)
    print(table)


class SysCounters:
    """Mosquitto's ``$SYS/broker/...`` counters (the broker publishes them every sys_interval)."""

    WANT = ("messages/sent", "messages/received", "bytes/sent", "bytes/received",
            "publish/messages/dropped", "publish/messages/sent", "publish/messages/received")

    def __init__(self, host: str, port: int) -> None:
        self.values: dict[str, int] = {}
        self.updated = threading.Event()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-sys")
        c.on_message = self._on_message
        c.connect(host, port)
        c.subscribe("$SYS/broker/#")
        c.loop_start()
        self.client = c

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        key = msg.topic.removeprefix("$SYS/broker/")
        if key in self.WANT:
            try:
                self.values[key] = int(msg.payload)
                self.updated.set()
            except ValueError:
                pass

    def snapshot(self, settle_s: float = 1.5) -> dict[str, int]:
        self.updated.clear()
        self.updated.wait(settle_s)
        time.sleep(settle_s)
        return dict(self.values)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
