"""The manager as the broker's administrator: enrolment and revocation reach Mosquitto live.

Why it exists: with the dynamic security plugin the broker's permissions are data the broker
owns and persists; the manager changes them over MQTT (``$CONTROL/dynamic-security/v1``), as
the manager identity on the manager listener, so enrolling or revoking a device needs no
broker restart, and a revoked device's open session is closed at once (``disableClient``).

The commands and their answers are :mod:`fleet.dynsec`'s (pure); this module is only the
transport: one :class:`fleet.mqtt.MqttConnection`, one request at a time, each answer matched
by the ``correlationData`` the plugin echoes.
"""

from __future__ import annotations

import itertools
import json
import queue
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from edgeops.errors import TransportError, UsageError
from fleet import dynsec
from fleet.mqtt import MqttConnection, MqttOptions, TlsOptions
from fleet.pki import MANAGER_IDENTITY

__all__ = ["DEFAULT_TIMEOUT_S", "BrokerAdmin", "read_password"]

DEFAULT_TIMEOUT_S = 10.0   # connect, and wait for the plugin's answer to one batch


def read_password(path: Path) -> str:
    """The manager's broker password from ``manager.password`` (written by broker-config)."""
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read the broker password file {path}: {exc.strerror}",
                         hint="copy manager.password from `edgeops fleet broker-config --out`"
                         ) from None
    if not text:
        raise UsageError(f"the broker password file {path} is empty")
    return text


class BrokerAdmin:
    """Grant and revoke devices on a running broker. Thread-safe; connects on first use."""

    def __init__(self, broker_url: str, password: str, *, tls: TlsOptions | None = None,
                 username: str = MANAGER_IDENTITY, client_id: str | None = None,
                 timeout_s: float | None = None) -> None:
        self.timeout_s = timeout_s or DEFAULT_TIMEOUT_S
        # every admin client receives every answer on the response topic: tag ours
        self._instance = secrets.token_hex(6)
        self._conn = MqttConnection(
            broker_url,
            MqttOptions(client_id=client_id or f"edgeops-broker-admin-{self._instance}",
                        username=username, password=password, clean_start=True,
                        session_expiry_s=0, manual_ack=False),
            tls=tls, subscriptions=[(dynsec.RESPONSE_TOPIC, 1)])
        self._lock = threading.Lock()
        self._started = False
        self._ids = itertools.count(1)

    def __enter__(self) -> BrokerAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._started:
                self._conn.close()
                self._started = False

    def grant_device(self, device_id: str) -> None:
        """Let an enrolled device use its own topics (and the shared read-only ones)."""
        self.run(dynsec.grant_device(device_id))

    def revoke_device(self, device_id: str) -> None:
        """Close the device's session now and take every permission away."""
        self.run(dynsec.revoke_device(device_id))

    def run(self, commands: list[dict[str, Any]]) -> None:
        """Send one batch of control commands and wait for the broker's answer to it."""
        with self._lock:
            if not self._started:
                self._conn.start(self.timeout_s)
                self._started = True
            tag = f"edgeops-{self._instance}-{next(self._ids)}"
            sent = [c | {"correlationData": f"{tag}-{i}"} for i, c in enumerate(commands)]
            self._conn.publish(dynsec.CONTROL_TOPIC, json.dumps({"commands": sent}).encode())
            deadline = time.monotonic() + self.timeout_s
            while (left := deadline - time.monotonic()) > 0:
                try:
                    msg = self._conn.inbound.get(timeout=left)
                except queue.Empty:
                    break
                if f'"{tag}-0"'.encode() in msg.payload:
                    dynsec.check_responses(sent, msg.payload)
                    return
            raise TransportError(
                f"the broker did not answer the dynamic-security commands within "
                f"{self.timeout_s:g} s ({self._conn.last_error or 'no answer'})",
                hint="check --broker points at the manager listener and the broker runs "
                     "the generated config")
