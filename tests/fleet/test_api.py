"""The HTTP API over real HTTP (uvicorn on loopback), driven through the CLI's own client."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root

from edgeops.bundle import read_bundle
from edgeops.errors import BadContentError, UsageError, VerificationError
from edgeops.keys import KeyStore
from edgeops.trust import root_path
from fleet.api import openapi_document
from fleet.client import FleetClient
from fleet.errors import AuthError, ConflictError, ForbiddenError, NotFoundError
from fleet.repository import sign_targets_update
from tests.edgeops.bundles import PASSPHRASE, make_bundle, make_keystore
from tests.fleet.live import LiveFleet, live_fleet


@pytest.fixture
def live(keystore: KeyStore, tmp_path: Path) -> Iterator[LiveFleet]:
    with live_fleet(keystore, tmp_path) as lf:
        yield lf


def _publish(c: FleetClient, keys: KeyStore, bundle: Path) -> dict:  # type: ignore[type-arg]
    root = Metadata[Root].from_file(str(root_path(keys)))
    targets = sign_targets_update(c.current_targets(), read_bundle(bundle), root,
                                  keys.signer("targets", PASSPHRASE))
    return c.publish(c.upload(bundle)["upload"], targets)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - loopback test URL
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_auth_roles_and_token_lifecycle(live: LiveFleet) -> None:
    admin = FleetClient(live.url, live.admin)
    assert (live.server.opts.data / "admin.token").stat().st_mode & 0o777 == 0o600
    with pytest.raises(AuthError, match="needs an API token"):
        FleetClient(live.url).devices()
    with pytest.raises(AuthError, match="unknown API token"):
        FleetClient(live.url, "eot_nope").devices()
    viewer_tok = admin.create_token("viewer", "dash")
    viewer = FleetClient(live.url, viewer_tok["token"])
    assert viewer.devices()["total"] == 0
    with pytest.raises(ForbiddenError, match="operator"):
        viewer.enrol("cam-1", "camera", "x86-cpu", {})
    with pytest.raises(ForbiddenError):
        viewer.create_token("admin", "escalate")
    listed = admin.tokens()["items"]
    assert {t["role"] for t in listed} == {"admin", "viewer"}
    assert all("token" not in t for t in listed)              # secrets never listed
    admin.revoke_token(viewer_tok["token_id"])
    with pytest.raises(AuthError, match="revoked"):
        viewer.devices()
    with pytest.raises(NotFoundError):
        admin.revoke_token("0000")


def test_enrol_list_filter_and_get_devices(live: LiveFleet) -> None:
    c = FleetClient(live.url, live.admin)
    for i in range(5):
        c.enrol(f"cam-{i}", "camera", "x86-cpu", {"city": "lyon", "district": str(i % 2)})
    c.enrol("bus-7", "vehicle", "arm64-cpu", {"city": "lyon", "route": "C3"})
    assert c.devices()["total"] == 6
    assert c.devices(**{"class": "vehicle"})["items"][0]["id"] == "bus-7"
    assert c.devices(tag=["district=1"])["total"] == 2
    assert c.devices(search="c3")["total"] == 1
    page = c.devices(limit=4)
    assert len(page["items"]) == 4 and page["next_cursor"]
    assert len(c.devices(limit=4, cursor=page["next_cursor"])["items"]) == 2
    assert c.device("bus-7")["target"] == "arm64-cpu"
    with pytest.raises(NotFoundError):
        c.device("ghost")
    for bad in (("bad/id", "camera", "x86-cpu"), ("ok", "toaster", "x86-cpu"),
                ("ok", "camera", "z80")):
        with pytest.raises(UsageError):
            c.enrol(*bad, {})
    with pytest.raises(UsageError, match="not an integer"):
        c.devices(limit="many")


def test_publish_deploy_and_operate_over_http(live: LiveFleet, keystore: KeyStore,
                                              bundles: dict[str, Path]) -> None:
    c = FleetClient(live.url, live.admin)
    out = _publish(c, keystore, bundles["1.0.0"])
    assert out["new"] and out["targets_version"] == 1
    assert [b["version"] for b in c.bundles()["items"]] == ["1.0.0"]
    status, ts = _get(live.url + "/tuf/metadata/timestamp.json")
    assert status == 200 and json.loads(ts)["signed"]["_type"] == "timestamp"
    sha = read_bundle(bundles["1.0.0"]).manifest.artifacts[0].file.sha256
    status, blob = _get(f"{live.url}/tuf/targets/bundles/tiny/1.0.0/artifacts/x86-cpu/"
                        f"{sha}.model.onnx")
    assert status == 200 and blob == read_bundle(bundles["1.0.0"]).read_file(
        "artifacts/x86-cpu/model.onnx")
    assert _get(live.url + "/tuf/metadata/..%2Fadmin.token")[0] == 404
    for i in range(4):
        c.enrol(f"cam-{i}", "camera", "x86-cpu", {"district": "4"})
    st = c.deploy("tiny", "1.0.0", "district=4", {"phases": ["50%", "100%"]})
    assert st["devices"] == 4 and st["status"] == "running"
    assert c.act(st["id"], "pause")["status"] == "paused"
    with pytest.raises(ConflictError):
        c.act(st["id"], "pause")
    assert c.act(st["id"], "resume")["status"] == "running"
    assert [d["id"] for d in c.deployments()["items"]] == [st["id"]]
    assert len(c.deployment_devices(st["id"])["items"]) == 4
    assert c.act(st["id"], "cancel")["status"] == "cancelled"
    with pytest.raises(BadContentError, match="selects no device"):
        c.deploy("tiny", "1.0.0", "district=9", {})
    with pytest.raises(NotFoundError):
        c.deploy("tiny", "7.0.0", "all", {})
    with pytest.raises(UsageError, match="unknown strategy fields"):
        c.deploy("tiny", "1.0.0", "all", {"phasez": 1})
    with pytest.raises(NotFoundError):
        c.deployment("d-nope")


def test_publish_refusals_over_http(live: LiveFleet, keystore: KeyStore,
                                    bundles: dict[str, Path], tmp_path: Path) -> None:
    c = FleetClient(live.url, live.admin)
    operator = FleetClient(live.url, c.create_token("operator", "ops")["token"])
    with pytest.raises(ForbiddenError, match="publisher"):
        operator.upload(bundles["1.0.0"])
    foreign = make_keystore(tmp_path / "mallory")
    evil = make_bundle(tmp_path, foreign, version="6.6.6")
    root = Metadata[Root].from_file(str(root_path(keystore)))
    targets = sign_targets_update(None, read_bundle(evil), root,
                                  keystore.signer("targets", PASSPHRASE))
    with pytest.raises(BadContentError, match="not signed by a trusted targets key"):
        c.publish(c.upload(evil)["upload"], targets)
    with pytest.raises(NotFoundError, match="no upload"):
        c.publish("abc123", targets)
    with pytest.raises(UsageError, match="empty"):
        c.request("POST", "/api/v1/uploads", data=b"", content_type="application/octet-stream")
    with pytest.raises(UsageError, match="not valid JSON"):
        c.request("POST", "/api/v1/deployments", data=b"{oops")
    assert c.bundles()["items"] == []
    assert list((live.server.opts.data / "uploads").iterdir()) == []  # nothing half-kept
    assert issubclass(VerificationError, BadContentError)


def test_blessing_gate_over_http(keystore: KeyStore, bundles: dict[str, Path],
                                 tmp_path: Path) -> None:
    with live_fleet(keystore, tmp_path, require_blessing=True) as live:
        c = FleetClient(live.url, live.admin)
        _publish(c, keystore, bundles["1.0.0"])
        c.enrol("cam-1", "camera", "x86-cpu", {})
        with pytest.raises(BadContentError, match="not blessed for hardware class x86_64"):
            c.deploy("tiny", "1.0.0", "all", {})
        with pytest.raises(BadContentError):
            c.bless("tiny", "1.0.0", {"schema": "nope"})
        with pytest.raises(BadContentError):          # never a blessing on the caller's word
            c.bless("tiny", "1.0.0", {"hardware": "x86_64", "passed": True})
        with pytest.raises(NotFoundError):
            c.bless("tiny", "9.0.0", {})
        assert c.request("GET", "/api/v1/bundles/tiny/1.0.0/blessings")["items"] == []
        import hashlib

        from edgeops.blessing import REQUIRED_CHECKS, CheckResult, HardwareReport

        manifest_sha = hashlib.sha256(read_bundle(bundles["1.0.0"]).manifest_bytes).hexdigest()

        def report(sha: str, failed: str | None = None, hardware: str = "x86_64") -> dict:  # type: ignore[type-arg]
            return HardwareReport(
                bundle="tiny", version="1.0.0", manifest_sha256=sha, target="x86-cpu",
                hardware=hardware, created="2026-11-27T00:00:00+00:00",
                checks=tuple(CheckResult(n, "failed" if n == failed else "passed", "ok")
                             for n in REQUIRED_CHECKS)).to_dict()

        with pytest.raises(BadContentError, match="different manifest"):
            c.bless("tiny", "1.0.0", report("ab" * 32))
        with pytest.raises(BadContentError, match="hardware class x86_64"):
            c.bless("tiny", "1.0.0", report(manifest_sha, hardware="aarch64"))
        lying = report(manifest_sha, failed="golden")
        lying["passed"] = True                        # a report that lies about its checks
        with pytest.raises(BadContentError, match="claims passed=True"):
            c.bless("tiny", "1.0.0", lying)
        assert c.bless("tiny", "1.0.0", report(manifest_sha, failed="golden"))["passed"] is False
        with pytest.raises(BadContentError, match="not blessed"):
            c.deploy("tiny", "1.0.0", "all", {})
        assert c.bless("tiny", "1.0.0", report(manifest_sha))["passed"] is True
        assert c.deploy("tiny", "1.0.0", "all", {})["status"] == "running"


def test_openapi_describes_every_route(live: LiveFleet) -> None:
    status, body = _get(live.url + "/openapi.json")
    doc = json.loads(body)
    assert status == 200 and doc["openapi"].startswith("3.1")
    assert doc == openapi_document()
    for p in ("/api/v1/devices", "/api/v1/deployments/{deployment_id}/rollback",
              "/tuf/targets/{path}", "/healthz"):
        assert p in doc["paths"]
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert len(refs) > 20
    for r in refs:                                    # every reference resolves
        assert r.removeprefix("#/components/schemas/") in doc["components"]["schemas"]
    for path, ops in doc["paths"].items():            # every route has an operation id
        for op in ops.values():
            assert op["operationId"] and op["responses"], path
    assert _get(live.url + "/healthz")[0] == 200


def test_stale_uploads_are_removed(tmp_path: Path) -> None:
    import os

    from fleet.server import remove_stale_uploads

    old, new = tmp_path / "a.edgebundle", tmp_path / "b.edgebundle"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (1000.0, 1000.0))
    assert remove_stale_uploads(tmp_path, 3600, now=1000.0 + 3601) == 1
    assert not old.exists() and new.exists()
