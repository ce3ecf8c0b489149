"""Delta updates on the fleet side: which deltas publish makes, the repository's checks, and the
bytes saved in a deployment's status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root

from edgeops.bundle import read_bundle
from edgeops.delta import delta_target_path, diff_artifacts
from edgeops.errors import VerificationError
from edgeops.keys import KeyStore
from edgeops.protocol import StateReport
from edgeops.trust import root_path
from fleet.deltas import DeltaBase, plan_bases, summarise_deliveries
from fleet.repository import Repository, sign_targets_update
from fleet.store import Store
from fleet.store.models import TelemetryRow
from fleet.worker import StoreCatalog
from tests.edgeops.bundles import PASSPHRASE
from tests.edgeops.delta_models import mlp_bundle
from tests.fleet.helpers import publish, repository
from tests.fleet.live import LiveFleet, cli_fleet
from tests.fleet.test_cli import run

ART = "artifacts/x86-cpu/model.onnx"


@pytest.fixture(scope="module")
def mlps(tmp_path_factory: pytest.TempPathFactory, keystore: KeyStore) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("mlp")
    return {"1.0.0": mlp_bundle(d, keystore, version="1.0.0"),
            "1.1.0": mlp_bundle(d, keystore, version="1.1.0", head_seed=42),
            "1.2.0": mlp_bundle(d, keystore, version="1.2.0", head_seed=43)}


# -- pure ------------------------------------------------------------------------------------
def test_plan_bases_takes_the_k_most_deployed_older_versions_per_target(
        mlps: dict[str, Path]) -> None:
    m = read_bundle(mlps["1.2.0"]).manifest
    deployed = [DeltaBase("1.0.0", "x86-cpu", 5), DeltaBase("1.1.0", "x86-cpu", 50),
                DeltaBase("0.9.0", "x86-cpu", 1), DeltaBase("1.2.0", "x86-cpu", 9),
                DeltaBase("1.0.0", "arm64-cpu", 70)]
    assert [b.version for b in plan_bases(deployed, m, 2)] == ["1.1.0", "1.0.0"]
    assert plan_bases(deployed, m, 0) == []


def test_summarise_deliveries_keeps_the_last_record_per_device() -> None:
    def rec(method: str, fetched: int, reason: str | None = None) -> str:
        # as ingest stores it: the record less kind, ts and deployment_id
        return json.dumps({"bundle": "mlp@1.1.0", "method": method, "fetched_bytes": fetched,
                           "full_bytes": 1000, "reason": reason})
    s = summarise_deliveries([("a", 1.0, rec("full", 1000, "delta failed (corrupt)")),
                              ("a", 2.0, rec("delta", 40)), ("b", 3.0, rec("delta", 60)),
                              ("c", 4.0, rec("full", 1000, "no delta from the active model")),
                              ("d", 5.0, "not json"), ("e", 6.0, '["a list"]'),
                              ("b", 7.0, rec("delta", -60)),        # does not parse: skipped
                              ("f", 8.0, rec("by-post", 10))], "d-1")
    assert s == {"devices_reported": 3, "devices_by_delta": 2, "devices_fell_back_to_full": 1,
                 "bytes_fetched": 1100, "bytes_full": 3000, "bytes_saved": 1900}


# -- repository ------------------------------------------------------------------------------
def _delta(mlps: dict[str, Path], old: str, new: str, tmp: Path) -> tuple[str, Path]:
    a = read_bundle(mlps[old]).read_file(ART)
    b = read_bundle(mlps[new]).read_file(ART)
    d = diff_artifacts(a, b)
    f = tmp / f"{old}-{new}.edgedelta"
    d.write(f)
    return delta_target_path("mlp", new, "x86-cpu", d.header.base.sha256,
                             d.header.to.sha256), f


def _sign(repo: Repository, keys: KeyStore, bundle: Path,
          deltas: dict[str, Path]) -> bytes:
    import hashlib

    root = Metadata[Root].from_file(str(root_path(keys)))
    pins = {p: (f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest())
            for p, f in deltas.items()}
    return sign_targets_update(repo.current_targets(), read_bundle(bundle), root,
                               keys.signer("targets", PASSPHRASE), pins)


def test_publish_lists_and_serves_a_signed_delta(store: Store, keystore: KeyStore,
                                                 mlps: dict[str, Path], tmp_path: Path) -> None:
    repo = repository(store, keystore)
    publish(repo, keystore, mlps["1.0.0"])
    path, f = _delta(mlps, "1.0.0", "1.1.0", tmp_path)
    r = repo.publish(mlps["1.1.0"], _sign(repo, keystore, mlps["1.1.0"], {path: f}), {path: f})
    assert path in r.files
    rec = store.get_bundle("mlp", "1.1.0")
    assert rec is not None and path.split("/", 3)[3] in rec.files
    sha = r.files[path][1]
    assert repo.target_file(f"x/{sha}.{path.rsplit('/', 1)[1]}").read_bytes() == f.read_bytes()
    targets = Metadata.from_bytes(repo.current_targets() or b"")
    assert path in targets.signed.targets      # type: ignore[attr-defined]
    # deliverable over MQTT chunks to that target's devices only, like its artifact
    info = StoreCatalog(store).artifact(sha)
    assert info is not None and info.targets == frozenset({"x86-cpu"})


def test_unsigned_delta_is_refused_and_nothing_is_published(
        store: Store, keystore: KeyStore, mlps: dict[str, Path], tmp_path: Path) -> None:
    repo = repository(store, keystore)
    publish(repo, keystore, mlps["1.0.0"])
    path, f = _delta(mlps, "1.0.0", "1.1.0", tmp_path)
    with pytest.raises(VerificationError, match="does not pin"):
        repo.publish(mlps["1.1.0"], _sign(repo, keystore, mlps["1.1.0"], {}), {path: f})
    assert store.get_bundle("mlp", "1.1.0") is None


def test_delta_that_yields_another_artifact_is_refused(
        store: Store, keystore: KeyStore, mlps: dict[str, Path], tmp_path: Path) -> None:
    repo = repository(store, keystore)
    publish(repo, keystore, mlps["1.0.0"])
    wrong_path, f = _delta(mlps, "1.0.0", "1.2.0", tmp_path)       # delta to 1.2.0's artifact
    right_path, _ = _delta(mlps, "1.0.0", "1.1.0", tmp_path)
    with pytest.raises(VerificationError, match="not a delta path|does not turn"):
        repo.publish(mlps["1.1.0"], _sign(repo, keystore, mlps["1.1.0"], {right_path: f}),
                     {right_path: f})
    with pytest.raises(VerificationError, match="not a delta path"):
        repo.publish(mlps["1.1.0"], _sign(repo, keystore, mlps["1.1.0"], {wrong_path: f}),
                     {wrong_path: f})
    assert store.get_bundle("mlp", "1.1.0") is None


# -- end to end over HTTP: publish makes deltas, status shows bytes saved ---------------------
@pytest.fixture
def live(keystore: KeyStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[LiveFleet]:
    with cli_fleet(keystore, tmp_path, monkeypatch) as lf:
        yield lf


def test_publish_makes_deltas_from_deployed_versions_and_status_shows_bytes_saved(
        live: LiveFleet, mlps: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "publish", str(mlps["1.0.0"]))[0] == 0
    assert run(capsys, "publish", str(mlps["1.1.0"]))[0] == 0
    store = live.server.store
    for i, version in enumerate(["1.0.0", "1.0.0", "1.1.0"]):
        assert run(capsys, "fleet", "enroll", f"cam-{i}", "--class", "camera", "--target",
                   "x86-cpu", "--out", str(live.server.opts.data / "e" / str(i)))[0] == 0
        assert store.record_state(StateReport(
            f"cam-{i}", 1, 1.0, active={"name": "mlp", "version": version, "target": "x86-cpu",
                                        "slot": "a"}))
    code, out, err = run(capsys, "publish", str(mlps["1.2.0"]), "--max-deltas", "1", "--json")
    assert code == 0, err
    res = json.loads(out)
    (path,) = res["deltas"]                           # K=1: only the most deployed, 1.0.0
    v1 = read_bundle(mlps["1.0.0"]).manifest.artifact_for("x86-cpu")
    assert v1 is not None and f"/deltas/{v1.file.sha256}-" in path
    full = read_bundle(mlps["1.2.0"]).manifest.artifact_for("x86-cpu")
    assert full is not None and res["delta_bytes"][path]["size"] < 0.2 * full.file.size

    code, out, err = run(capsys, "fleet", "deploy", "mlp@1.2.0", "--select", "all", "--json")
    assert code == 0, err
    dep = json.loads(out)
    size = res["delta_bytes"][path]["size"]
    store.insert_telemetry([TelemetryRow(f"cam-{i}", dep["created_at"] + 1, "delivery", {
        "method": m, "fetched_bytes": n, "full_bytes": full.file.size, "reason": None,
        "bundle": "mlp@1.2.0"}, 1, dep["id"]) for i, m, n in
        [(0, "delta", size), (1, "delta", size), (2, "full", full.file.size)]])
    code, out, _ = run(capsys, "fleet", "status", dep["id"], "--json")
    d = json.loads(out)["delivery"]
    assert d["devices_by_delta"] == 2 and d["bytes_saved"] == 2 * (full.file.size - size)
    code, out, _ = run(capsys, "fleet", "status", dep["id"])
    assert code == 0 and "2 of 3 devices by delta" in out and f"({d['bytes_saved']} saved)" in out


def test_publish_with_bad_delta_uploads_is_refused(live: LiveFleet, mlps: dict[str, Path],
                                                   keystore: KeyStore) -> None:
    from fleet.client import FleetClient
    from fleet.errors import NotFoundError

    c = FleetClient(live.url, live.admin)
    root = Metadata[Root].from_file(str(root_path(keystore)))
    targets = sign_targets_update(c.current_targets(), read_bundle(mlps["1.0.0"]), root,
                                  keystore.signer("targets", PASSPHRASE))
    with pytest.raises(NotFoundError, match="no upload"):
        c.publish(c.upload(mlps["1.0.0"])["upload"], targets, {"bundles/x": "abc123"})
    from edgeops.errors import UsageError
    with pytest.raises(UsageError, match="deltas"):
        c.request("POST", "/api/v1/bundles", body={"upload": c.upload(mlps["1.0.0"])["upload"],
                                                   "targets": targets.decode(),
                                                   "deltas": {"p": "../../etc"}})
    assert c.bundles()["items"] == []
    assert not list((live.server.opts.data).rglob("*.edgebundle"))   # uploads cleaned up
