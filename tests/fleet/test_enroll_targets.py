"""Target names are checked against edgeops' profiles always (the check used to fail open
when the converters package was absent)."""

from __future__ import annotations

import pytest

from edgeops.errors import UsageError
from fleet.enroll import new_device
from fleet.rollout.engine import hardware_class


def test_enrolment_refuses_an_unknown_target() -> None:
    with pytest.raises(UsageError, match="unknown target 'z80-cpu'"):
        new_device("cam-1", "camera", "z80-cpu", {})


def test_enrolment_accepts_a_profiled_target() -> None:
    assert new_device("cam-1", "camera", "arm64-cpu", {}).target == "arm64-cpu"


def test_blessing_hardware_class_comes_from_the_profile() -> None:
    assert hardware_class("x86-cpu") == "x86_64"
    assert hardware_class("z80-cpu") is None


def test_a_vnni_device_needs_its_own_blessing() -> None:
    """x86-cpu-vnni ships 8-bit weights that only VNNI CPUs run correctly: a blessing of the
    7-bit x86-cpu artifact must not let it roll out, so its hardware class differs."""
    assert new_device("srv-1", "gateway", "x86-cpu-vnni", {}).target == "x86-cpu-vnni"
    assert hardware_class("x86-cpu-vnni") == "x86_64-vnni" != hardware_class("x86-cpu")
