"""AgentConfig: the enrol → agent contract (schema edgeops.agent-config/v1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from securesystemslib.signer import SSlibKey

from device_agent.config import CONFIG_SCHEMA, AgentConfig, parse_window
from edgeops.errors import ConfigError


def _manager_key() -> dict[str, Any]:
    pub = SSlibKey.from_crypto(Ed25519PrivateKey.generate().public_key())
    return {"keyid": pub.keyid, **pub.to_dict()}


def sample(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "schema": CONFIG_SCHEMA, "device_id": "cam-17", "device_class": "camera",
        "target": "x86-cpu", "tags": {"city": "lyon", "district": "4"},
        "broker": {"url": "mqtt://127.0.0.1:1883", "keepalive_s": 30, "tls": None,
                   "username": None, "password": None},
        "fleet_url": "http://127.0.0.1:8080", "data_dir": "state",
        "trust": {"root": "root.json", "manager_keys": [_manager_key()]},
        "policy": {"maintenance_windows": [], "driving_signal": None},
        "inference": {"socket": None, "http": None},
        "telemetry": {"interval_s": 10, "queue_max_records": 100000},
    }
    d.update(over)
    return d


def write(tmp_path: Path, d: Any) -> Path:
    p = tmp_path / "agent.json"
    p.write_text(json.dumps(d))
    return p


def test_contract_example_parses_with_relative_paths(tmp_path: Path) -> None:
    d = sample(broker={"url": "mqtts://127.0.0.1:8883", "keepalive_s": 30,
                       "tls": {"ca": "ca.pem", "cert": "device.crt", "key": "device.key"}},
               policy={"maintenance_windows": ["02:00-04:00", "23:30-00:30"],
                       "driving_signal": {"file": "/run/vehicle/driving"}},
               inference={"socket": "agent.sock", "http": "127.0.0.1:8500"})
    cfg = AgentConfig.from_file(write(tmp_path, d))
    base = tmp_path.resolve()
    assert cfg.device_id == "cam-17" and cfg.target == "x86-cpu"
    assert cfg.data_dir == base / "state"
    assert cfg.trust.root == base / "root.json"
    assert cfg.broker.tls is not None and cfg.broker.tls.ca == base / "ca.pem"
    assert cfg.broker.tls.key == base / "device.key"
    assert cfg.policy.driving_signal is not None
    assert cfg.policy.driving_signal.file == Path("/run/vehicle/driving")
    assert cfg.inference.socket == base / "agent.sock"
    assert cfg.inference.http_address == ("127.0.0.1", 8500)
    assert cfg.trust.manager_keys[0].keyid == d["trust"]["manager_keys"][0]["keyid"]


def test_round_trip_through_to_dict(tmp_path: Path) -> None:
    cfg = AgentConfig.from_file(write(tmp_path, sample(
        policy={"maintenance_windows": ["01:00-02:00"], "driving_signal": {"topic": "local/d"}})))
    again = AgentConfig.from_dict(json.loads(json.dumps(cfg.to_dict())), base_dir=Path("/x"))
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize(("over", "needle"), [
    ({"schema": "edgeops.agent-config/v9"}, "schema"),
    ({"device_id": "cam/17"}, "device_id"),
    ({"target": 3}, "target"),
    ({"broker": {"url": "http://x"}}, "broker.url"),
    ({"broker": {"keepalive_s": 1}}, "keepalive_s"),
    ({"broker": {"tls": {"ca": "ca.pem", "cert": "c.crt"}}}, "broker.tls"),
    ({"trust": {"manager_keys": []}}, "trust.root"),
    ({"trust": {"root": "r.json", "manager_keys": [{"keyid": "x", "keytype": "rsa"}]}},
     "manager_keys[0]"),
    ({"policy": {"maintenance_windows": ["25:00-26:00"]}}, "maintenance_windows"),
    ({"policy": {"driving_signal": {"file": "a", "topic": "b"}}}, "driving_signal"),
    ({"inference": {"http": "0.0.0.0:8500"}}, "loopback"),
    ({"inference": {"http": "127.0.0.1"}}, "inference.http"),
    ({"telemetry": {"queue_max_records": 0}}, "queue_max_records"),
    ({"tags": {"a": 1}}, "tags"),
])
def test_bad_fields_name_the_field(tmp_path: Path, over: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        AgentConfig.from_file(write(tmp_path, sample(**over)))
    assert needle in info.value.message
    assert info.value.hint


def test_missing_file_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        AgentConfig.from_file(tmp_path / "nope.json")
    (tmp_path / "agent.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        AgentConfig.from_file(tmp_path / "agent.json")
    with pytest.raises(ConfigError, match="not a JSON object"):
        AgentConfig.from_file(write(tmp_path, [1, 2]))


@given(st.integers(0, 23), st.integers(0, 59), st.integers(0, 23), st.integers(0, 59))
def test_window_parse(h1: int, m1: int, h2: int, m2: int) -> None:
    text = f"{h1:02d}:{m1:02d}-{h2:02d}:{m2:02d}"
    if (h1, m1) == (h2, m2):
        with pytest.raises(ConfigError):
            parse_window(text)
    else:
        assert parse_window(text) == (h1 * 60 + m1, h2 * 60 + m2)


_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_text = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)


@given(device_id=_ids, target=_ids, tags=st.dictionaries(_text, _text, max_size=3),
       keepalive=st.integers(5, 3600), interval=st.floats(0.1, 3600),
       max_records=st.integers(1, 10**7),
       windows=st.lists(st.sampled_from(["02:00-04:00", "23:30-00:30", "12:00-12:01"]),
                        max_size=3),
       driving=st.sampled_from([None, {"file": "/run/vehicle/driving"},
                                {"topic": "local/vehicle/driving"}]),
       http=st.sampled_from([None, "127.0.0.1:8500", "[::1]:9000"]))
def test_config_round_trip(device_id: str, target: str, tags: dict[str, str], keepalive: int,
                           interval: float, max_records: int, windows: list[str],
                           driving: dict[str, str] | None, http: str | None) -> None:
    d = sample(device_id=device_id, target=target, tags=tags,
               broker={"url": "mqtt://127.0.0.1:1883", "keepalive_s": keepalive},
               policy={"maintenance_windows": windows, "driving_signal": driving},
               inference={"socket": "agent.sock", "http": http},
               telemetry={"interval_s": interval, "queue_max_records": max_records})
    cfg = AgentConfig.from_dict(d, base_dir=Path("/etc/edgeops"))
    again = AgentConfig.from_dict(json.loads(json.dumps(cfg.to_dict())), base_dir=Path("/x"))
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()
