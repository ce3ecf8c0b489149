"""The Prometheus exposition writer and the ingest-rate tracker, without a server."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from fleet.metrics import Family, RateTracker, _histogram_family, render

_LINE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>.*)\})? (?P<value>\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """A strict reader of the text format: comments, then ``name{labels} value`` lines."""
    out = []
    assert text.endswith("\n")
    for line in text[:-1].split("\n"):      # "\n" is the format's only line terminator
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$", line), line
            continue
        m = _LINE.match(line)
        assert m, line
        labels = {}
        if m["labels"]:
            pairs = _LABEL.findall(m["labels"])
            assert ",".join(f'{k}="{v}"' for k, v in pairs) == m["labels"], line
            labels = {k: re.sub(r"\\(.)", lambda e: {"n": "\n"}.get(e[1], e[1]), v)
                      for k, v in pairs}
        out.append((m["name"], labels, float(m["value"])))
    return out


@given(st.lists(st.tuples(st.text(max_size=20), st.floats(allow_nan=False, width=32)),
                min_size=1, max_size=5))
def test_label_values_round_trip_through_escaping(samples: list[tuple[str, float]]) -> None:
    f = Family("edgeops_test", "gauge", "help text")
    for label, value in samples:
        f.add(value, device=label)
    parsed = parse(render([f]))
    assert [(p[1]["device"], p[2]) for p in parsed] == [
        (label, float(value)) for label, value in samples]


def test_render_writes_help_type_and_integer_values() -> None:
    f = Family("edgeops_devices", "gauge", "Devices.")
    f.add(3, **{"class": "camera", "state": "online"})
    f.add(0.25)
    assert render([f]) == ("# HELP edgeops_devices Devices.\n# TYPE edgeops_devices gauge\n"
                           'edgeops_devices{class="camera",state="online"} 3\n'
                           "edgeops_devices 0.25\n")


def test_histogram_is_cumulative_in_seconds_with_inf_bucket() -> None:
    h = _histogram_family((1.0, 10.0, None), (2, 3, 1))
    s = {(suffix, dict(labels).get("le")): v for suffix, labels, v in h.samples}
    assert s[("_bucket", "0.001")] == 2
    assert s[("_bucket", "0.01")] == 5
    assert s[("_bucket", "+Inf")] == 6 and s[("_count", None)] == 6
    # midpoints: 2 × 0.5 ms + 3 × 5.5 ms + 1 × 10 ms (open bucket at its lower bound)
    assert abs(s[("_sum", None)] - (2 * 0.0005 + 3 * 0.0055 + 0.010)) < 1e-12


def test_rate_tracker_uses_a_sliding_window() -> None:
    now = [0.0]
    r = RateTracker(60.0, clock=lambda: now[0])
    assert r.observe(100) is None          # one sample: no rate yet
    now[0] = 10.0
    assert r.observe(300) == 20.0
    now[0] = 100.0                          # the first sample has left the window
    assert r.observe(1200) == (1200 - 300) / 90.0
    now[0] = 110.0
    assert r.observe(1200) == (1200 - 300) / 100.0
    now[0] = 170.0                          # samples older than the window are dropped
    assert r.observe(1200) == 0.0


def test_rate_tracker_starts_over_after_a_counter_reset() -> None:
    now = [0.0]
    r = RateTracker(60.0, clock=lambda: now[0])
    r.observe(5000)
    now[0] = 10.0
    assert r.observe(40) is None            # never a negative rate
    now[0] = 20.0
    assert r.observe(140) == 10.0
