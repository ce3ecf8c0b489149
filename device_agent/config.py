"""The agent's configuration file (``agent.json``), parsed once into typed, validated values.

``edgeops fleet enroll`` writes the file and the agent reads it, so this module is the single
definition of the schema (``edgeops.agent-config/v1``, see docs/AGENT.md). Relative paths are
resolved against the config file's directory, so an enrolment folder can be copied as a whole.
Every problem becomes one :class:`~edgeops.errors.ConfigError` naming the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key, SSlibKey

from edgeops.errors import ConfigError
from edgeops.protocol.topics import valid_device_id

__all__ = [
    "CONFIG_SCHEMA",
    "AgentConfig",
    "BrokerConfig",
    "DrivingSignal",
    "InferenceConfig",
    "PolicyConfig",
    "TelemetryConfig",
    "TlsConfig",
    "TrustConfig",
    "parse_window",
]

CONFIG_SCHEMA = "edgeops.agent-config/v1"
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)$")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_HINT = "fix the agent config file (see docs/AGENT.md) or enrol the device again"


def _err(where: str, what: str) -> ConfigError:
    return ConfigError(f"agent config: {where} {what}", hint=_HINT)


def _get(d: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str,
         default: Any = ..., allow_none: bool = False) -> Any:
    if key not in d:
        if default is ...:
            raise _err(f"{where}{key}", "is missing")
        return default
    value = d[key]
    if value is None and allow_none:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float,
                                                                         (int, float))):
        raise _err(f"{where}{key}", f"has the wrong type ({type(value).__name__})")
    return value


def _path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def parse_window(text: str) -> tuple[int, int]:
    """``"HH:MM-HH:MM"`` → (start, end) in minutes after local midnight; end may wrap."""
    m = _WINDOW.match(text)
    if not m:
        raise _err("policy.maintenance_windows", f"entry {text!r} is not 'HH:MM-HH:MM'")
    start = int(m.group(1)) * 60 + int(m.group(2))
    end = int(m.group(3)) * 60 + int(m.group(4))
    if end > 24 * 60 or start == end:
        raise _err("policy.maintenance_windows", f"entry {text!r} is empty or past 24:00")
    return start, end


@dataclass(frozen=True)
class TlsConfig:
    """Mutual TLS to the broker: CA bundle, device certificate and key (absolute paths)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class BrokerConfig:
    url: str = "mqtt://127.0.0.1:1883"
    keepalive_s: int = 30
    tls: TlsConfig | None = None
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class TrustConfig:
    """The fleet's TUF root (file) and the pinned manager keys that sign commands."""

    root: Path
    manager_keys: tuple[Key, ...] = ()


@dataclass(frozen=True)
class DrivingSignal:
    """Where the vehicle says it is driving: a local file or a local MQTT topic (one of them)."""

    file: Path | None = None
    topic: str | None = None

    def to_dict(self) -> dict[str, str]:
        return {"file": str(self.file)} if self.file is not None else {"topic": str(self.topic)}


@dataclass(frozen=True)
class PolicyConfig:
    maintenance_windows: tuple[str, ...] = ()
    driving_signal: DrivingSignal | None = None


@dataclass(frozen=True)
class InferenceConfig:
    """Local inference endpoints: a Unix socket path and/or a loopback ``host:port``."""

    socket: Path | None = None
    http: str | None = None

    @property
    def http_address(self) -> tuple[str, int] | None:
        if self.http is None:
            return None
        host, _, port = self.http.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class TelemetryConfig:
    interval_s: float = 10.0
    queue_max_records: int = 100_000


@dataclass(frozen=True)
class AgentConfig:
    """One device's agent settings; build it with :meth:`from_file` or :meth:`from_dict`."""

    device_id: str
    target: str
    trust: TrustConfig
    data_dir: Path
    device_class: str = "generic"
    tags: dict[str, str] = field(default_factory=dict)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    fleet_url: str | None = None
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    source: Path | None = None

    @property
    def slots_dir(self) -> Path:
        return self.data_dir / "slots"

    # -- parsing -------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: Path | str) -> AgentConfig:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"agent config {path} does not exist",
                              hint="pass --config with the agent.json written by "
                                   "`edgeops fleet enroll`") from None
        except OSError as exc:
            raise ConfigError(f"cannot read agent config {path}: {exc.strerror}",
                              hint="check the file's permissions") from None
        try:
            d = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"agent config {path} is not valid JSON ({exc})",
                              hint=_HINT) from None
        if not isinstance(d, dict):
            raise ConfigError(f"agent config {path} is not a JSON object", hint=_HINT)
        return cls.from_dict(d, base_dir=path.resolve().parent, source=path)

    @classmethod
    def from_dict(cls, d: dict[str, Any], base_dir: Path,
                  source: Path | None = None) -> AgentConfig:
        schema = _get(d, "schema", str, "")
        if schema != CONFIG_SCHEMA:
            raise ConfigError(f"agent config schema {schema!r} is not supported",
                              hint=f"this agent reads {CONFIG_SCHEMA}; upgrade the agent")
        device_id = _get(d, "device_id", str, "")
        if not valid_device_id(device_id):
            raise _err("device_id", f"{device_id!r} is not a valid device id "
                                    "(letters, digits, '.', '_', '-')")
        tags = _get(d, "tags", dict, "", default={})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise _err("tags", "must map strings to strings")
        return cls(
            device_id=device_id,
            device_class=_get(d, "device_class", str, "", default="generic"),
            target=_get(d, "target", str, ""),
            tags=dict(tags),
            broker=_broker(_get(d, "broker", dict, "", default={}), base_dir),
            fleet_url=_get(d, "fleet_url", str, "", default=None, allow_none=True),
            data_dir=_path(base_dir, _get(d, "data_dir", str, "", default="state")),
            trust=_trust(_get(d, "trust", dict, ""), base_dir),
            policy=_policy(_get(d, "policy", dict, "", default={}), base_dir),
            inference=_inference(_get(d, "inference", dict, "", default={}), base_dir),
            telemetry=_telemetry(_get(d, "telemetry", dict, "", default={})),
            source=source,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (absolute paths); ``from_dict(to_dict())`` gives an equal config."""
        tls = self.broker.tls
        return {
            "schema": CONFIG_SCHEMA, "device_id": self.device_id,
            "device_class": self.device_class, "target": self.target, "tags": dict(self.tags),
            "broker": {"url": self.broker.url, "keepalive_s": self.broker.keepalive_s,
                       "tls": None if tls is None else {
                           "ca": str(tls.ca),
                           "cert": str(tls.cert) if tls.cert else None,
                           "key": str(tls.key) if tls.key else None},
                       "username": self.broker.username, "password": self.broker.password},
            "fleet_url": self.fleet_url, "data_dir": str(self.data_dir),
            "trust": {"root": str(self.trust.root),
                      "manager_keys": [{"keyid": k.keyid, **k.to_dict()}
                                       for k in self.trust.manager_keys]},
            "policy": {"maintenance_windows": list(self.policy.maintenance_windows),
                       "driving_signal": self.policy.driving_signal.to_dict()
                       if self.policy.driving_signal else None},
            "inference": {"socket": str(self.inference.socket) if self.inference.socket
                          else None, "http": self.inference.http},
            "telemetry": {"interval_s": self.telemetry.interval_s,
                          "queue_max_records": self.telemetry.queue_max_records},
        }


def _broker(d: dict[str, Any], base: Path) -> BrokerConfig:
    url = _get(d, "url", str, "broker.", default="mqtt://127.0.0.1:1883")
    if not url.startswith(("mqtt://", "mqtts://", "ws://", "wss://")):
        raise _err("broker.url", f"{url!r} must start with mqtt://, mqtts://, ws:// or wss://")
    keepalive = _get(d, "keepalive_s", int, "broker.", default=30)
    if not 5 <= keepalive <= 3600:
        raise _err("broker.keepalive_s", "must be between 5 and 3600 seconds")
    tls_d = _get(d, "tls", dict, "broker.", default=None, allow_none=True)
    tls = None
    if tls_d is not None:
        cert = _get(tls_d, "cert", str, "broker.tls.", default=None, allow_none=True)
        key = _get(tls_d, "key", str, "broker.tls.", default=None, allow_none=True)
        if (cert is None) != (key is None):
            raise _err("broker.tls", "needs both 'cert' and 'key' for mutual TLS, or neither")
        tls = TlsConfig(ca=_path(base, _get(tls_d, "ca", str, "broker.tls.")),
                        cert=_path(base, cert) if cert else None,
                        key=_path(base, key) if key else None)
    return BrokerConfig(url=url, keepalive_s=keepalive, tls=tls,
                        username=_get(d, "username", str, "broker.", None, allow_none=True),
                        password=_get(d, "password", str, "broker.", None, allow_none=True))


def _trust(d: dict[str, Any], base: Path) -> TrustConfig:
    keys: list[Key] = []
    for i, k in enumerate(_get(d, "manager_keys", list, "trust.", default=[])):
        if not isinstance(k, dict) or not isinstance(k.get("keyid"), str):
            raise _err(f"trust.manager_keys[{i}]", "must be a key object with a 'keyid'")
        body = {kk: vv for kk, vv in k.items() if kk != "keyid"}
        try:
            key = SSlibKey.from_dict(k["keyid"], body)
        except (KeyError, TypeError, ValueError) as exc:
            raise _err(f"trust.manager_keys[{i}]", f"is not a valid public key ({exc})") from None
        keys.append(key)
    return TrustConfig(root=_path(base, _get(d, "root", str, "trust.")), manager_keys=tuple(keys))


def _policy(d: dict[str, Any], base: Path) -> PolicyConfig:
    windows = _get(d, "maintenance_windows", list, "policy.", default=[])
    for w in windows:
        if not isinstance(w, str):
            raise _err("policy.maintenance_windows", "must hold 'HH:MM-HH:MM' strings")
        parse_window(w)
    sig_d = _get(d, "driving_signal", dict, "policy.", default=None, allow_none=True)
    return PolicyConfig(maintenance_windows=tuple(windows),
                        driving_signal=parse_driving_signal(sig_d, base))


def parse_driving_signal(d: dict[str, Any] | None, base: Path) -> DrivingSignal | None:
    """``null``, ``{"file": PATH}`` or ``{"topic": TOPIC}``; also used by ``config`` commands."""
    if d is None:
        return None
    if set(d) == {"file"} and isinstance(d["file"], str) and d["file"]:
        return DrivingSignal(file=_path(base, d["file"]))
    if set(d) == {"topic"} and isinstance(d["topic"], str) and d["topic"] \
            and "+" not in d["topic"] and "#" not in d["topic"]:
        return DrivingSignal(topic=d["topic"])
    raise _err("policy.driving_signal", 'must be null, {"file": PATH} or {"topic": TOPIC}')


def _inference(d: dict[str, Any], base: Path) -> InferenceConfig:
    sock = _get(d, "socket", str, "inference.", default=None, allow_none=True)
    http = _get(d, "http", str, "inference.", default=None, allow_none=True)
    if http is not None:
        host, sep, port = http.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise _err("inference.http", f"{http!r} must be 'HOST:PORT'")
        if host.strip("[]") not in _LOOPBACK:
            raise _err("inference.http", f"{http!r} must bind loopback (127.0.0.1 or ::1): "
                                         "the local API has no authentication")
    return InferenceConfig(socket=_path(base, sock) if sock else None, http=http)


def _telemetry(d: dict[str, Any]) -> TelemetryConfig:
    interval = float(_get(d, "interval_s", (int, float), "telemetry.", default=10.0))
    max_records = _get(d, "queue_max_records", int, "telemetry.", default=100_000)
    if interval <= 0:
        raise _err("telemetry.interval_s", "must be positive")
    if max_records < 1:
        raise _err("telemetry.queue_max_records", "must be at least 1")
    return TelemetryConfig(interval_s=interval, queue_max_records=max_records)
