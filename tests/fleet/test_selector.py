"""Selector language: parsing, matching, the SQL prefilter, and malformed terms."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeops.errors import UsageError
from fleet.rollout import Strategy, parse_phases
from fleet.selector import parse_selector
from fleet.store import Device, DeviceFilter

CAM = Device("cam-17", "camera", "x86-cpu", {"city": "lyon", "district": "4"},
             active={"name": "vc", "version": "2.1.0", "target": "x86-cpu", "slot": "a"})
BUS = Device("bus-3", "vehicle", "arm64-cpu", {"city": "lyon", "route": "C3"})


@pytest.mark.parametrize(("text", "cam", "bus"), [
    ("all", True, True), ("", True, True), ("*", True, True),
    ("city=lyon", True, True), ("district=4", True, False), ("district=3|4", True, False),
    ("class=vehicle", False, True), ("target!=x86-cpu", False, True), ("id=cam-*", True, False),
    ("route!=C3", True, False), ("version=2.1.0", True, False), ("version=vc@2.1.0", True, False),
    ("version!=2.1.0", False, True), ("city=lyon,class=camera,district=4", True, False),
])
def test_matches(text: str, cam: bool, bus: bool) -> None:
    sel = parse_selector(text)
    assert (sel.matches(CAM), sel.matches(BUS)) == (cam, bus)


def test_prefilter_keeps_only_what_sql_can_check_exactly() -> None:
    sel = parse_selector("city=lyon,class=camera,district=3|4,id=cam-*,route!=C3,target=x86-cpu")
    assert sel.prefilter() == DeviceFilter(device_class="camera", target="x86-cpu",
                                           tags={"city": "lyon"})


@pytest.mark.parametrize("bad", ["city", "=lyon", "city=", "ci ty=x", "city=a||b", "a=b,,c=d"])
def test_malformed_terms_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_selector(bad)


KEY = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda k: k not in ("class", "target", "id", "version"))
VAL = st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True)


@given(st.lists(st.tuples(KEY, st.lists(VAL, min_size=1, max_size=3), st.booleans()),
                max_size=5))
def test_parse_of_str_is_identity(terms: list[tuple[str, list[str], bool]]) -> None:
    text = ",".join(f"{k}{'!=' if neg else '='}{'|'.join(vs)}" for k, vs, neg in terms)
    sel = parse_selector(text)
    assert parse_selector(str(sel)) == sel


@given(phases=st.lists(st.floats(0.001, 100), min_size=1, max_size=4).map(sorted),
       per_min=st.one_of(st.none(), st.integers(1, 1000)), bake=st.floats(0, 1e5),
       pct=st.floats(0.1, 100), sample=st.integers(1, 100))
def test_strategy_json_round_trip(phases: list[float], per_min: int | None, bake: float,
                                  pct: float, sample: int) -> None:
    s = Strategy(parse_phases(",".join(f"{p!r}%" for p in phases)), max_per_minute=per_min,
                 bake_s=bake, abort_failure_pct=pct, abort_min_sample=sample)
    assert Strategy.from_dict(s.to_dict()) == s
