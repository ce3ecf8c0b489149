"""The console's drift page in real headless Chromium against a real manager: a seeded drifting
cohort (two Lyon cameras whose inputs' spread grew) shows its status, reference vs live
histograms per feature with the drifting ones marked, the monitor in alarm and its history."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.drift.alerts import DriftAlerts, alert_store, parse_monitor
from tests.console.conftest import ConsoleFleet
from tests.console.test_browser import _settle, browser, page_for, shot
from tests.fleet.test_drift import REF, _enrol, _publish
from tests.fleet.test_drift_alerts import _live_drift

pytestmark = pytest.mark.browser
__all__ = ["browser", "page_for"]          # fixtures this module uses from test_browser


def test_drift_page_renders_histograms_of_a_drifting_cohort(page_for: Any,
                                                            console_fleet: ConsoleFleet) -> None:
    store = console_fleet.live.server.store
    _enrol(store)
    _publish(store)
    _live_drift(store)
    rec, _ = parse_monitor({"name": "lyon-cams", "cohort": "city=lyon,class=camera",
                            "webhooks": []}, now=1.0, created_by="test")
    alert_store(store).add_monitor(rec)
    assert DriftAlerts(store).evaluate() == 2

    page = page_for(console_fleet.viewer)
    alerts = page.inner_text("[data-testid=alerts]")            # the overview lists the alarm
    assert "lyon-cams: vc@1.0.0" in alerts and "data drift for 3 windows" in alerts
    page.click("a[data-nav=drift]")
    page.wait_for_selector("[data-testid=drift-monitors]")
    assert "lyon-cams" in page.inner_text("[data-testid=drift-monitors]")
    assert "vc@1.0.0 data" in page.inner_text("[data-testid=drift-monitors]")
    page.click("[data-testid=drift-monitors] tbody tr")          # to the monitor's cohort
    page.wait_for_selector("[data-testid=drift-hists][data-bundle='vc@1.0.0']")
    _settle(page)
    assert page.inner_text("[data-testid=drift-group]") == "cohort:city=lyon,class=camera"
    status = page.inner_text("[data-testid=drift-status]")
    assert "cohort:city=lyon,class=camera" in status and "alarm" in status
    for fb in REF.features:
        cell = page.locator(f".hist-cell[data-feature='{fb.name}']")
        assert cell.count() == 1, fb.name
        svg = cell.locator("svg")
        assert svg.locator("rect[data-part=reference]").count() == fb.bins
        assert svg.locator("rect[data-part=live]").count() == fb.bins
    drifting = page.locator(".hist-cell[data-feature='input:x[0]']")
    assert "drift" in drifting.inner_text() and "p=" in drifting.inner_text()
    history = page.inner_text("[data-testid=alarm-history]")
    assert "alarm started" in history and "input:x[0]" in history
    shot(page, "drift")

    page.click("[data-testid=drift-status] tr[data-group='device:cam-1']")
    page.wait_for_selector("[data-testid=drift-group]:has-text('device:cam-1')")
    _settle(page)
    assert page.locator(".hist-cell[data-feature='input:x[0]'] rect[data-part=live]").count() \
        == REF.feature("input:x[0]").bins                         # type: ignore[union-attr]
