"""The reusable Mosquitto fixture: missing binary vs broken start are told apart."""

from __future__ import annotations

import pytest

from tests.fleet.mqtt import broker as broker_mod
from tests.fleet.mqtt.broker import BrokerStartError, BrokerUnavailableError, MosquittoBroker


def test_a_missing_binary_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_mod, "find_mosquitto", lambda: None)
    with pytest.raises(BrokerUnavailableError, match="not installed"):
        MosquittoBroker().start()


@pytest.mark.broker
def test_a_broker_that_does_not_start_is_an_error_not_a_skip() -> None:
    if broker_mod.find_mosquitto() is None:
        pytest.skip("mosquitto not installed")
    b = MosquittoBroker(extra_conf=["no_such_option true"])
    with pytest.raises(BrokerStartError):
        b.start(timeout_s=5)
    b.stop()


def test_config_carries_the_tuning() -> None:
    text = MosquittoBroker(port=1234, max_inflight_messages=0, max_queued_messages=77,
                           tcp_nodelay=False).config_text()
    assert "listener 1234 127.0.0.1" in text
    assert "max_inflight_messages 0" in text and "max_queued_messages 77" in text
    assert "set_tcp_nodelay" not in text
