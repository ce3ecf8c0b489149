"""The MQTT settings both adapters share: broker URLs, TLS contexts, the inbound message."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeops.errors import ConfigError, UsageError
from edgeops.mqtt_settings import (
    BrokerAddress,
    InboundMessage,
    TlsSettings,
    parse_broker_address,
)


@pytest.mark.parametrize(("url", "expected"), [
    ("mqtt://127.0.0.1:1883", BrokerAddress("127.0.0.1", 1883, False)),
    ("mqtt://broker", BrokerAddress("broker", 1883, False)),
    ("tcp://broker:1884", BrokerAddress("broker", 1884, False)),
    ("mqtts://broker", BrokerAddress("broker", 8883, True)),
    ("ssl://[::1]:8884", BrokerAddress("::1", 8884, True)),
])
def test_broker_urls(url: str, expected: BrokerAddress) -> None:
    assert parse_broker_address(url) == expected


@pytest.mark.parametrize("url", ["http://broker:1883", "mqtt://", "broker:1883", "mqtt://h:99999",
                                 "mqtt://h:port"])
def test_bad_broker_urls_raise_the_callers_error_with_its_hint(url: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_broker_address(url)
    assert "e.g. --broker" in e.value.hint
    with pytest.raises(ConfigError) as c:
        parse_broker_address(url, schemes=("mqtt", "mqtts"), error=ConfigError,
                             hint="set broker.url")
    assert c.value.hint == "set broker.url"


def test_schemes_can_be_limited() -> None:
    with pytest.raises(ConfigError, match="is not mqtt://"):
        parse_broker_address("tcp://broker:1883", schemes=("mqtt", "mqtts"), error=ConfigError)


@given(host=st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True),
       port=st.integers(1, 65535), tls=st.booleans())
def test_an_address_round_trips_through_its_url(host: str, port: int, tls: bool) -> None:
    address = BrokerAddress(host, port, tls)
    assert parse_broker_address(address.url) == address


def test_tls_context_verifies_the_server_and_refuses_old_protocols() -> None:
    ctx = TlsSettings().context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_unloadable_tls_files_are_the_callers_error(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("not a certificate")
    with pytest.raises(UsageError, match="cannot load client certificate"):
        TlsSettings(cert=tmp_path / "c.pem", key=tmp_path / "c.pem").context()
    with pytest.raises(ConfigError, match="cannot load CA certificates") as e:
        TlsSettings(ca=str(tmp_path / "missing.pem")).context(error=ConfigError,
                                                               hint="check broker.tls")
    assert e.value.hint == "check broker.tls"


def test_inbound_messages_compare_by_value() -> None:
    a = InboundMessage("devices/x/state", b"{}", 1, False, 7)
    assert a == InboundMessage("devices/x/state", b"{}", 1, False, 7)
    assert a != InboundMessage("devices/x/state", b"{}", 1, True, 7)
    assert len({a, InboundMessage("devices/x/state", b"{}", 1, False, 7)}) == 1
    assert "devices/x/state" in repr(a) and "2 bytes" in repr(a)


def test_the_managers_inbound_messages_are_deliveries() -> None:
    from fleet.mqtt import Inbound

    one, two = (Inbound("t", b"x", 1, False, 5, generation=1) for _ in range(2))
    assert one != two and one == one and len({one, two}) == 2
