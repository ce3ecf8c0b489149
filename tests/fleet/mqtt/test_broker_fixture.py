"""The suite's Mosquitto starter (tests/mosquitto.py): missing binary vs broken start are told
apart, and the config carries what each caller asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import mosquitto as broker_mod
from tests.mosquitto import BrokerStartError, BrokerUnavailableError, MosquittoBroker, TlsMaterial


def test_a_missing_binary_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_mod, "find_mosquitto", lambda: None)
    with pytest.raises(BrokerUnavailableError, match="not installed"):
        MosquittoBroker().start()


def test_a_missing_binary_skips_through_start_or_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_mod, "find_mosquitto", lambda: None)
    monkeypatch.setenv("EDGEOPS_REQUIRE_SERVICES", "0")
    with pytest.raises(pytest.skip.Exception, match="apt-get install mosquitto"):
        broker_mod.start_or_skip(MosquittoBroker())
    monkeypatch.setenv("EDGEOPS_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="forbids skipping"):
        broker_mod.start_or_skip(MosquittoBroker())


def test_a_broker_that_does_not_start_is_an_error_not_a_skip() -> None:
    if broker_mod.find_mosquitto() is None:
        pytest.skip("mosquitto not installed")
    b = MosquittoBroker(extra_conf=["no_such_option true"])
    with pytest.raises(BrokerStartError):
        b.start(timeout_s=5)
    b.stop()


def test_a_foreign_config_needs_its_port(tmp_path: Path) -> None:
    if broker_mod.find_mosquitto() is None:
        pytest.skip("mosquitto not installed")
    with pytest.raises(ValueError, match="pass port="):
        MosquittoBroker(config_file=tmp_path / "mosquitto.conf").start()


def test_config_carries_the_tuning() -> None:
    text = MosquittoBroker(port=1234, max_inflight_messages=0, max_queued_messages=77,
                           tcp_nodelay=False).config_text()
    assert "listener 1234 127.0.0.1" in text
    assert "max_inflight_messages 0" in text and "max_queued_messages 77" in text
    assert "set_tcp_nodelay" not in text


def test_none_leaves_mosquittos_default_and_mtls_adds_a_second_listener(tmp_path: Path) -> None:
    tls = TlsMaterial(*(tmp_path / n for n in ("ca", "srv.crt", "srv.key", "c.crt", "c.key")))
    text = MosquittoBroker(port=1, tls_port=2, max_inflight_messages=None,
                           max_queued_messages=None, max_queued_bytes=None, sys_interval_s=None,
                           mtls=tls).config_text()
    assert "max_inflight" not in text and "max_queued" not in text and "sys_interval" not in text
    assert f"listener 2 127.0.0.1\ncafile {tmp_path / 'ca'}" in text
    assert "use_identity_as_username true" in text
