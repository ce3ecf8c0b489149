"""The operator-object check shared by the drift monitor body and its capture_on_drift object:
what it refuses and the exact line (and hint) the operator reads."""

from __future__ import annotations

from typing import Any

import pytest

from edgeops.errors import UsageError
from fleet.drift.alerts import parse_monitor
from fleet.fields import known_fields


def test_an_object_of_known_fields_is_returned_as_is() -> None:
    body = {"a": 1, "b": [2]}
    assert known_fields(body, ("a", "b", "c"), what="thing", not_object="no", example="e") is body


@pytest.mark.parametrize(("value", "message", "hint"), [
    ([1], "thing must be an object", "e.g. {}"),
    ("a", "thing must be an object", "e.g. {}"),
    ({"b": 1, "zz": 2, "y": 3}, "unknown thing field 'y'", "fields: a, b"),
])
def test_not_an_object_or_an_unknown_field_is_one_line_with_a_hint(
        value: object, message: str, hint: str) -> None:
    with pytest.raises(UsageError) as e:
        known_fields(value, ("b", "a"), what="thing", not_object="thing must be an object",
                     example="e.g. {}")
    assert (e.value.message, e.value.hint) == (message, hint)


@pytest.mark.parametrize(("body", "message", "hint"), [
    ([], "monitor body must be a JSON object",
     'e.g. {"name": "lyon-cams", "cohort": "city=lyon", "webhooks": [{"url": "https://..."}]}'),
    ({"name": "m", "zeta": 1, "alpha2": 2}, "unknown monitor field 'alpha2'",
     "fields: alpha, capture_on_drift, cohort, correction, min_samples, name, persistence, "
     "retrain, test, webhooks"),
    ({"name": "m", "capture_on_drift": []}, "monitor capture_on_drift must be null or an object",
     'e.g. {"sample_rate": 0.05, "max_bytes_per_device": 67108864, '
     '"max_bytes_per_day": 16777216, "hours": 24}'),
    ({"name": "m", "capture_on_drift": {"colour": 1, "abc": 2}},
     "unknown capture_on_drift field 'abc'",
     "fields: hours, max_bytes_per_day, max_bytes_per_device, sample_rate"),
])
def test_a_monitor_body_is_refused_with_the_same_words(body: Any, message: str,
                                                       hint: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_monitor(body, now=1.0, created_by=None)
    assert (e.value.message, e.value.hint) == (message, hint)
