"""Install policy: maintenance windows (with wrap past midnight) and the driving signal."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_agent.config import DrivingSignal
from device_agent.policy import DrivingState, InstallPolicy, in_windows
from edgeops.errors import ConfigError


def at(h: int, m: int = 0) -> datetime:
    return datetime(2026, 11, 27, h, m)


@pytest.mark.parametrize(("windows", "now", "inside", "wait_s"), [
    ([], at(12), True, 0),
    (["02:00-04:00"], at(3), True, 0),
    (["02:00-04:00"], at(4), False, 22 * 3600),
    (["02:00-04:00"], at(1, 30), False, 30 * 60),
    (["23:00-01:00"], at(0, 30), True, 0),
    (["23:00-01:00"], at(23, 0), True, 0),
    (["23:00-01:00"], at(1, 0), False, 22 * 3600),
    (["02:00-04:00", "13:00-14:00"], at(12), False, 3600),
    (["00:00-24:00"], at(23, 59), True, 0),
])
def test_windows(windows: list[str], now: datetime, inside: bool, wait_s: float) -> None:
    assert in_windows(windows, now) == (inside, pytest.approx(wait_s))


@given(st.integers(0, 23), st.integers(0, 59), st.integers(0, 23 * 60 + 59),
       st.integers(1, 23 * 60))
def test_window_wait_lands_inside(h: int, m: int, start: int, length: int) -> None:
    end = (start + length) % (24 * 60)
    if end == start:
        return
    w = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    now = datetime(2026, 11, 27, h, m)
    inside, wait = in_windows([w], now)
    if not inside:
        later = datetime.fromtimestamp(now.timestamp() + wait)
        assert in_windows([w], later)[0]


def test_driving_file_and_fail_safe(tmp_path: Path) -> None:
    flag = tmp_path / "driving"
    pol = InstallPolicy([], DrivingState(DrivingSignal(file=flag)), clock=lambda: at(3))
    d = pol.evaluate()
    assert not d.allowed and d.reason is not None and "unknown" in d.reason
    flag.write_text("1\n")
    d = pol.evaluate()
    assert not d.allowed and "driving" in str(d.reason) and d.retry_after_s > 0
    flag.write_text("0")
    assert pol.evaluate().allowed
    flag.write_text("maybe")
    assert not pol.evaluate().allowed


def test_driving_topic_and_config_command_switch() -> None:
    state = DrivingState(DrivingSignal(topic="local/vehicle/driving"))
    pol = InstallPolicy(["02:00-04:00"], state, clock=lambda: at(2, 30))
    assert not pol.evaluate().allowed                       # nothing heard yet
    state.on_topic_message(b"1")
    assert "driving" in str(pol.evaluate().reason)
    state.on_topic_message(b"0")
    assert pol.evaluate().allowed
    state.on_topic_message(b"x" * 10_000)                   # garbage: unknown again
    assert not pol.evaluate().allowed
    state.set_signal(None)                                  # a `config` command removes it
    assert pol.evaluate().allowed
    assert pol.describe()["driving_signal"] is None


def test_window_beats_driving_and_bad_window_is_config_error() -> None:
    pol = InstallPolicy(["02:00-04:00"], clock=lambda: at(12))
    d = pol.evaluate()
    assert not d.allowed and "next opens at 02:00" in str(d.reason)
    with pytest.raises(ConfigError):
        InstallPolicy(["2-4"])
