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
