"""A deployment's outcome goes back to the MLflow model version its bundle was built from:
real MLflow server, a bundle built from ``models:/...@champion``, the real rollout engine and
store, devices reporting through the engine's own entry point."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from edgeops.bundle import read_bundle
from edgeops.keys import KeyStore
from edgeops.protocol import DevicePhase, StateReport
from fleet.mlflow_outcomes import MlflowOutcomes
from fleet.ports import CommandSigner
from fleet.rollout import RolloutEngine, Strategy, parse_phases
from fleet.store import BundleRecord, Store, open_store
from tests.converters import zoo
from tests.converters.conftest import PASSPHRASE
from tests.fleet.fakes import FakeDeviceChannel
from tests.fleet.helpers import enrol
from tests.registry.conftest import log_onnx

pytestmark = pytest.mark.slow


def _report(store: Store, dev: str, dep: str, phase: DevicePhase) -> StateReport:
    d = store.get_device(dev)
    assert d is not None
    active = ({"name": "cls", "version": "1.0.0", "target": "x86-cpu", "slot": "b"}
              if phase == DevicePhase.HEALTHY else None)
    return StateReport(dev, d.last_state_seq + 1, time.time(), phase, dep, "cls@1.0.0",
                       active=active, reason=None if phase == DevicePhase.HEALTHY
                       else "health check failed: golden outputs differ")


def _wait_tag(client: Any, name: str, version: str, key: str, timeout_s: float = 20) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tags = client.get_model_version(name, version).tags
        if key in tags:
            return str(tags[key])
        time.sleep(0.2)
    raise AssertionError(f"no tag {key} on {name} v{version} after {timeout_s}s")


def test_completed_and_aborted_deployments_tag_the_model_version(
        cli, keys_home: Path, tracking: Any, mlflow_server: Any, tmp_path: Path) -> None:
    logged = log_onnx(tracking, "cls-fleet", zoo.convnet(13), alias="champion")
    res = cli("build", "models:/cls-fleet@champion", "--name", "cls", "--version", "1.0.0",
              "--target", "x86-cpu", "--precision", "fp32", "--out", tmp_path / "o", "--json")
    assert res.code == 0, res.err
    b = read_bundle(Path(json.loads(res.out)["bundle"]))
    store = open_store(str(tmp_path / "fleet.db"), tmp_path / "data")
    store.put_bundle(BundleRecord("cls", "1.0.0", b.manifest_bytes, b.signatures.to_bytes(),
                                  time.time(), {}))
    ids = enrol(store, 4)
    signer = CommandSigner(KeyStore(keys_home).signer("manager", PASSPHRASE.encode()), store)
    engine = RolloutEngine(store, FakeDeviceChannel(), signer)
    outcomes = MlflowOutcomes(store, mlflow_server.uri)
    engine.attach_outcome_listener(outcomes)
    try:
        ok = engine.create("cls", "1.0.0", "district=0|1", Strategy(parse_phases("100%")))
        engine.step(ok.id)
        for dev in ids[:2]:
            assert engine.record_state(_report(store, dev, ok.id, DevicePhase.HEALTHY))
        assert engine.step(ok.id).finish == "completed"
        assert _wait_tag(tracking, "cls-fleet", logged.version,
                         f"edgeops.deployment.{ok.id}") == "completed: 2 healthy"

        bad = engine.create("cls", "1.0.0", "district=2|3",
                            Strategy(parse_phases("100%"), abort_min_sample=1,
                                     abort_failure_pct=10))
        engine.step(bad.id)
        for dev in ids[2:]:
            assert engine.record_state(_report(store, dev, bad.id, DevicePhase.FAILED))
        assert engine.step(bad.id).finish == "aborted"
        value = _wait_tag(tracking, "cls-fleet", logged.version, f"edgeops.deployment.{bad.id}")
        assert value.startswith("aborted: ") and "fail" in value
    finally:
        outcomes.close()
        store.close()


def test_outcomes_for_bundles_without_lineage_are_skipped(tmp_path: Path) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[str, ...]] = []

        def tag_deployment(self, *a: str) -> None:
            self.calls.append(a)

    from fleet.store import Deployment

    store = open_store(str(tmp_path / "fleet.db"), tmp_path / "data")
    rec = Recorder()
    outcomes = MlflowOutcomes(store, "http://unused", registry=rec)
    outcomes(Deployment("d-1", "nope", "1.0.0", "all", {}, "completed", 0, 0, 0, 0, None, None))
    outcomes.close()
    store.close()
    assert rec.calls == []
