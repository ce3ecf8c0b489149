"""End to end in real headless Chromium (Playwright) against a real manager with a seeded fleet.

Pages render with the seeded numbers, filters narrow the device list, an operator pauses the
running deployment from the UI and the store says paused, a viewer sees no operator action (and
the API answers 403). Each page leaves a screenshot under test-artifacts/console/.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import ConsoleFleet
from tests.services import need

CHROMIUM = os.environ.get("EDGEOPS_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    need("chromium", Path(CHROMIUM).is_file(), "apt-get install -y chromium chromium-driver")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("playwright", False, "pip install playwright (never `playwright install`)")
        raise
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page_for(browser: Any, console_fleet: ConsoleFleet) -> Iterator[Any]:
    contexts: list[Any] = []
    errors: list[str] = []

    def open_as(token: str) -> Any:
        ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(console_fleet.url + "/")
        page.fill("#token", token)
        page.click("button[type=submit]")
        page.wait_for_selector("[data-testid=kpi-devices]")
        return page

    yield open_as
    for ctx in contexts:
        ctx.close()
    # a CSP violation or a script error is a bug even when the page looks fine
    assert not [e for e in errors if "401" not in e and "403" not in e], errors


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _api(fleet: ConsoleFleet, path: str, token: str, method: str = "GET") -> tuple[int, Any]:
    req = urllib.request.Request(fleet.url + path, method=method,  # noqa: S310 - loopback
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - loopback test URL
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _settle(page: Any) -> None:
    # selectors, not wait_for_function: the console's CSP rightly forbids eval'd scripts
    page.wait_for_selector("#view:not([aria-busy])", state="attached")


def test_every_page_renders_the_seeded_fleet(page_for: Any, console_fleet: ConsoleFleet) -> None:
    s = console_fleet.seeded
    page = page_for(console_fleet.viewer)
    # overview: counts from the store, charts drawn, the aborted deployment and drift alerted
    assert page.inner_text("[data-testid=kpi-devices] .value") == str(len(s.devices))
    assert page.inner_text("[data-testid=kpi-online] .value") == str(s.online)
    assert page.inner_text("[data-testid=kpi-offline] .value") == str(len(s.devices) - s.online)
    assert page.locator("svg[aria-label='devices by class'] rect").count() >= 4
    assert page.locator("svg[aria-label='devices by city'] rect").count() >= 6
    alerts = page.inner_text("[data-testid=alerts]")
    assert s.aborted in alerts and "failure rate 40%" in alerts
    assert s.drifting in alerts
    assert page.locator(f"[data-testid=deployments-table] tr[data-id='{s.running}']").count() == 1
    shot(page, "overview")

    page.click("a[data-nav=devices]")
    page.wait_for_selector("[data-testid=devices-table]")
    assert page.inner_text("[data-testid=device-total]").startswith(f"{len(s.devices)} devices")
    assert page.locator("[data-testid=devices-table] tbody tr").count() == 50   # one page
    shot(page, "devices")

    page.goto(f"{console_fleet.url}/console/#/devices/{s.drifting}")
    page.wait_for_selector("[data-testid=device-info]")
    _settle(page)
    assert page.inner_text("[data-testid=active-version]") == "tiny@1.0.0"
    for chart in ("latency", "drift", "cpu", "memory"):
        assert page.locator(f"svg[aria-label={chart}] path[data-series]").count() >= 1, chart
    assert "shift" in page.inner_text("[data-testid=last-telemetry]")
    shot(page, "device-detail")

    page.click("a[data-nav=deployments]")
    page.wait_for_selector(f"[data-testid=deployments-table] tr[data-id='{s.aborted}']")
    shot(page, "deployments")
    page.click(f"tr[data-id='{s.aborted}']")
    page.wait_for_selector("[data-testid=reason]")
    assert "Abort reason: failure rate 40%" in page.inner_text("[data-testid=reason]")
    page.goto(f"{console_fleet.url}/console/#/deployments/{s.running}")
    page.wait_for_selector("svg[aria-label='phase progress']")
    _settle(page)
    assert page.locator("svg[aria-label='phase progress'] rect[data-part=healthy]").count() == 1
    assert page.locator("[data-testid=deployment-devices] tbody tr").count() == 50
    shot(page, "deployment-detail")

    page.click("a[data-nav=bundles]")
    page.wait_for_selector("[data-testid=bundles-table]")
    for v in ("1.0.0", "1.1.0"):
        row = page.locator(f"tr[data-bundle='tiny@{v}']")
        assert "verified" in row.inner_text()
        assert "latency_ms_p95" in row.inner_text()
        assert row.locator("[data-testid=lineage]").inner_text() == "local file"
    shot(page, "bundles")


def test_device_filters_narrow_the_list(page_for: Any, console_fleet: ConsoleFleet) -> None:
    s = console_fleet.seeded
    page = page_for(console_fleet.viewer)
    page.goto(f"{console_fleet.url}/console/#/devices")
    page.wait_for_selector("[data-testid=devices-table]")

    def rows() -> list[str]:
        _settle(page)
        return page.locator("[data-testid=devices-table] tbody tr").evaluate_all(
            "rs => rs.map(r => r.dataset.id)")

    page.select_option("select[data-filter=class]", "vehicle")
    page.wait_for_selector('#view[data-rendered*="class=vehicle"]', state="attached")
    got = rows()
    assert got and all(i.startswith("veh-") for i in got)
    assert page.inner_text("[data-testid=device-total]").startswith(
        f"{sum(i.startswith('veh-') for i in s.devices)} devices")

    page.select_option("select[data-filter=tag]", "city=porto")
    page.wait_for_selector('#view[data-rendered*="tag=city%3Dporto"]', state="attached")
    got = rows()
    assert got and all(i.startswith("veh-porto-") for i in got)
    assert len(got) == sum(i.startswith("veh-porto-") for i in s.devices)

    # Each change re-renders the view; wait for it, or the typed search lands in a form that a
    # pending render then replaces (the test raced the page, not the other way round).
    page.select_option("select[data-filter=class]", "")
    page.wait_for_selector('#view:not([data-rendered*="class=vehicle"])', state="attached")
    _settle(page)
    page.select_option("select[data-filter=tag]", "")
    page.wait_for_selector('#view:not([data-rendered*="tag="])', state="attached")
    _settle(page)
    page.fill("input[data-filter=search]", "ghent")
    page.press("input[data-filter=search]", "Enter")
    page.wait_for_selector('#view[data-rendered*="search=ghent"]', state="attached")
    got = rows()
    assert got and all("-ghent-" in i for i in got)

    page.goto(f"{console_fleet.url}/console/#/devices?status=offline")
    page.wait_for_selector("[data-testid=device-total]")
    assert page.inner_text("[data-testid=device-total]").startswith(
        f"{len(s.devices) - s.online} device")
    shot(page, "devices-filtered")


def test_operator_pauses_a_deployment_and_the_fleet_follows(
        page_for: Any, console_fleet: ConsoleFleet) -> None:
    s = console_fleet.seeded
    store = console_fleet.live.server.services.store
    page = page_for(console_fleet.operator)
    page.goto(f"{console_fleet.url}/console/#/deployments/{s.running}")
    page.wait_for_selector("[data-testid=operator-actions]")
    _settle(page)
    assert page.is_disabled("button[data-action=resume]")
    page.click("button[data-action=pause]")
    page.wait_for_selector("[data-testid=dep-status] .badge.paused")
    dep = store.get_deployment(s.running)
    assert dep is not None and dep.status == "paused" and dep.reason == "paused by operator"
    assert _api(console_fleet, f"/api/v1/deployments/{s.running}",
                console_fleet.viewer)[1]["status"] == "paused"
    shot(page, "deployment-paused")

    page.click("button[data-action=resume]")
    page.wait_for_selector("[data-testid=dep-status] .badge.running")
    dep = store.get_deployment(s.running)
    assert dep is not None and dep.status == "running"

    # a refused action (the aborted deployment cannot be paused) is one line, not a crash
    page.goto(f"{console_fleet.url}/console/#/deployments/{s.aborted}")
    page.wait_for_selector("[data-testid=operator-actions]")
    _settle(page)
    assert page.is_disabled("button[data-action=pause]")
    page.once("dialog", lambda d: d.accept())
    page.click("button[data-action=rollback]")
    page.wait_for_selector("[data-testid=dep-status] .badge.rolled-back")
    dep = store.get_deployment(s.aborted)
    assert dep is not None and dep.status == "rolled-back"


def test_viewer_sees_no_operator_actions_and_the_api_refuses_them(
        page_for: Any, console_fleet: ConsoleFleet) -> None:
    s = console_fleet.seeded
    page = page_for(console_fleet.viewer)
    assert page.inner_text("[data-testid=role]") == "viewer"
    page.goto(f"{console_fleet.url}/console/#/deployments/{s.running}")
    page.wait_for_selector("[data-testid=viewer-note]")
    assert page.locator("[data-action]").count() == 0
    shot(page, "deployment-viewer")
    for verb in ("pause", "resume", "cancel", "rollback"):
        status, body = _api(console_fleet, f"/api/v1/deployments/{s.running}/{verb}",
                            console_fleet.viewer, "POST")
        assert status == 403 and "operator" in body["error"], (verb, body)
    dep = console_fleet.live.server.services.store.get_deployment(s.running)
    assert dep is not None and dep.status == "running"


def test_a_bad_token_stays_on_the_sign_in_page(browser: Any, console_fleet: ConsoleFleet) -> None:
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(console_fleet.url + "/console/")
    page.fill("#token", "eot_not-a-token")
    page.click("button[type=submit]")
    page.wait_for_selector("#flash:not([hidden])")
    assert "unknown API token" in page.inner_text("#flash")
    assert page.locator("#token").count() == 1
    shot(page, "sign-in-refused")
    ctx.close()
