"""Bundle aliases over real HTTP: set, move with a staged rollout, deploy by alias, history,
listings and the refusals (unknown alias, unpublished version, a rollout that selects nobody)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeops.errors import BadContentError, UsageError
from edgeops.keys import KeyStore
from fleet.api import openapi_document
from fleet.client import FleetClient
from fleet.errors import NotFoundError
from tests.edgeops.bundles import PASSPHRASE
from tests.fleet.live import LiveFleet, live_fleet, publish_bundle
from tests.fleet.test_cli import run


@pytest.fixture
def live(keystore: KeyStore, tmp_path: Path, bundles: dict[str, Path],
         monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveFleet]:
    with live_fleet(keystore, tmp_path) as lf:
        c = FleetClient(lf.url, lf.admin)
        for v in ("1.0.0", "1.1.0"):
            publish_bundle(c, keystore, bundles[v])
        for i in range(4):
            c.enrol(f"cam-{i}", "camera", "x86-cpu", {"district": "4"})
        monkeypatch.setenv("EDGEOPS_FLEET", lf.url)
        monkeypatch.setenv("EDGEOPS_TOKEN", lf.admin)
        monkeypatch.setenv("EDGEOPS_HOME", str(keystore.home))
        monkeypatch.setenv("EDGEOPS_KEY_PASSPHRASE", PASSPHRASE.decode())
        yield lf


def test_moving_an_alias_starts_a_rollout_and_records_who(live: LiveFleet) -> None:
    admin = FleetClient(live.url, live.admin)
    bot = FleetClient(live.url, admin.create_token("operator", "release-bot")["token"])
    first = admin.set_alias("tiny", "champion", "1.0.0")
    assert first["deployment"] is None and first["alias"]["previous"] is None
    moved = bot.set_alias("tiny", "champion", "1.1.0",
                          {"selector": "district=4", "strategy": {"phases": ["50%", "100%"]}})
    dep = moved["deployment"]
    assert moved["alias"]["version"] == "1.1.0" and moved["alias"]["previous"] == "1.0.0"
    assert moved["alias"]["moved_by"] == "release-bot"
    assert dep["bundle"] == "tiny@1.1.0" and dep["devices"] == 4 and dep["phases"] == 2
    assert moved["alias"]["deployment_id"] == dep["id"]
    shown = admin.alias("tiny", "champion")
    assert [(m["version"], m["previous"], m["deployment_id"]) for m in shown["moves"]] == [
        ("1.1.0", "1.0.0", dep["id"]), ("1.0.0", None, None)]
    assert [(a["alias"], a["version"]) for a in admin.aliases()["items"]] == [("champion", "1.1.0")]
    listed = {b["version"]: b["aliases"] for b in admin.bundles()["items"]}
    assert listed == {"1.0.0": [], "1.1.0": ["champion"]}
    admin.act(dep["id"], "cancel")
    by_alias = admin.deploy("tiny", None, "all", {}, alias="champion")
    assert by_alias["bundle"] == "tiny@1.1.0"


def test_alias_refusals_leave_the_alias_where_it_was(live: LiveFleet) -> None:
    c = FleetClient(live.url, live.admin)
    c.set_alias("tiny", "champion", "1.0.0")
    with pytest.raises(NotFoundError, match="no alias tiny@challenger"):
        c.deploy("tiny", None, "all", {}, alias="challenger")
    with pytest.raises(NotFoundError, match="not published"):
        c.set_alias("tiny", "champion", "9.9.9")
    with pytest.raises(BadContentError, match="selects no device"):
        c.set_alias("tiny", "champion", "1.1.0", {"selector": "district=9"})
    with pytest.raises(UsageError, match="not a usable alias"):
        c.set_alias("tiny", "v2", "1.1.0")
    assert c.alias("tiny", "champion")["version"] == "1.0.0"
    assert len(c.alias("tiny", "champion")["moves"]) == 1
    assert c.deployments()["items"] == []


def test_alias_cli_and_openapi(live: LiveFleet, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "fleet", "alias", "set", "tiny@champion", "1.1.0", "--rollout",
                         "--phases", "1,100%", "--select", "district=4")
    assert code == 0, err
    assert "tiny@champion -> 1.1.0" in out and "to 4 devices in 2 phases" in out
    code, out, err = run(capsys, "fleet", "alias", "show", "tiny@champion")
    assert code == 0 and "- -> 1.1.0  by admin" in out and "deployment d-" in out
    code, out, _ = run(capsys, "fleet", "bundles")
    assert "tiny@1.1.0  @champion  targets: x86-cpu" in out
    code, out, _ = run(capsys, "fleet", "alias", "list", "--json")
    assert json.loads(out)["items"][0]["version"] == "1.1.0"
    code, _, err = run(capsys, "fleet", "deploy", "tiny@nope")
    assert code == 1 and err.count("\n") == 1 and "no alias tiny@nope" in err
    doc = openapi_document()
    assert {"/api/v1/aliases", "/api/v1/bundles/{name}/aliases/{alias}"} <= set(doc["paths"])
    assert "put" in doc["paths"]["/api/v1/bundles/{name}/aliases/{alias}"]
    assert "alias" in doc["components"]["schemas"]["DeployRequest"]["properties"]


def test_bundle_listings_and_console_link_the_lineage(live: LiveFleet, keystore: KeyStore,
                                                      bundles: dict[str, Path],
                                                      tmp_path: Path) -> None:
    from edgeops.bundle import Lineage, Manifest, read_bundle, write_bundle

    src = read_bundle(bundles["1.0.0"])
    files = {ref.path: ref for ref in src.manifest.files()}
    paths = {p: src.extract_file(p, tmp_path / "x" / p) for p in files}
    lineage = Lineage(source_uri="models:/vehicle@champion", edgeops_version="0.1.0",
                      tracking_uri="http://mlflow.example:5000", model_name="vehicle",
                      model_version="7", alias="champion", run_id="abcdef0123456789",
                      experiment_id="3", git_commit="f" * 40)
    m = Manifest(**{**src.manifest.__dict__, "version": "2.0.0", "lineage": lineage})
    bundle = write_bundle(tmp_path / m.bundle_filename, m, paths,
                          [keystore.signer("targets", PASSPHRASE)])
    c = FleetClient(live.url, live.admin)
    publish_bundle(c, keystore, bundle)
    listed = {b["version"]: b["lineage"] for b in c.bundles()["items"]}
    assert listed["1.0.0"] is None
    assert listed["2.0.0"]["links"]["run"] == "http://mlflow.example:5000/#/experiments/3/runs/abcdef0123456789"
    console = c.request("GET", "/api/v1/console/bundles")
    row = next(i for i in console["items"] if i["version"] == "2.0.0")
    assert row["lineage"]["links"]["model_version"] == \
        "http://mlflow.example:5000/#/models/vehicle/versions/7"
    assert row["lineage"]["git_commit"] == "f" * 40
