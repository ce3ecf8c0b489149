"""The build writes the drift reference from the validation data into the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters.api import BuildRequest
from converters.build import build
from converters.data import DataError
from converters.package import manifest_for
from edgeops.bundle import Manifest
from tests.converters import zoo


def _build(model: Path, tmp_path: Path, **kw):  # type: ignore[no-untyped-def]
    req = BuildRequest(model=model, name="m", version="1.0.0", targets=("x86-cpu",),
                       precision="fp32", max_accuracy_drop=0.5,
                       options=kw.pop("options", {"perf_aware": False}), **kw)
    work = tmp_path / "work"
    work.mkdir(parents=True, exist_ok=True)
    return req, build(req, lambda _m: None, work)


def test_validation_data_gives_image_and_prediction_features_in_the_manifest(
        tmp_path: Path) -> None:
    p = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    x = np.random.default_rng(0).random((40, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "v.npz", x=x)
    req, out = _build(p, tmp_path, validation=tmp_path / "v.npz")
    ref = out.drift
    assert ref is not None and ref.samples == 40 and ref.source == "validation"
    names = {f.name for f in ref.features}
    assert {"input:x/brightness[0]", "input:x/contrast[2]", "input:x/colour"} <= names
    outs = [f for f in ref.features if f.side == "output"]
    assert outs and all(f.total == 40 for f in ref.features)
    m = manifest_for(req, out, created="2026-12-07T00:00:00Z")
    assert Manifest.from_bytes(m.to_bytes()).drift == ref


def test_synthetic_samples_give_no_reference(tmp_path: Path) -> None:
    p = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    _req, out = _build(p, tmp_path)
    assert out.data.get("synthetic") and out.drift is None


def test_reference_data_and_the_full_validation_set_are_used(tmp_path: Path) -> None:
    p = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "v.npz", x=rng.random((260, 3, 16, 16)).astype(np.float32))
    _req, out = _build(p, tmp_path / "a", validation=tmp_path / "v.npz")
    assert out.data["validation"]["used"] == 200               # the accuracy metrics' cap
    assert out.drift is not None and out.drift.samples == 260  # the reference reads them all
    np.savez(tmp_path / "r.npz", x=rng.random((30, 3, 16, 16)).astype(np.float32))
    _req, out = _build(p, tmp_path / "b", validation=tmp_path / "v.npz",
                       options={"perf_aware": False, "drift_reference": str(tmp_path / "r.npz")})
    assert out.drift is not None and out.drift.samples == 30 and out.drift.source == "reference"


def test_a_bad_reference_fails_before_any_backend_runs(tmp_path: Path) -> None:
    p = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    np.savez(tmp_path / "r.npz", y=np.ones((4, 3), np.float32))
    with pytest.raises(DataError, match="reference"):
        _build(p, tmp_path, options={"perf_aware": False,
                                     "drift_reference": str(tmp_path / "r.npz")})
    assert not list((tmp_path / "work").rglob("*.onnx"))


def test_cli_reference_option_reaches_the_signed_manifest(cli, keys_home: Path,  # type: ignore[no-untyped-def]
                                                          tmp_path: Path) -> None:
    from edgeops.bundle import read_bundle
    from edgeops.keys import KeyStore

    model = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    np.savez(tmp_path / "r.npz",
             x=np.random.default_rng(2).random((50, 3, 16, 16)).astype(np.float32))
    res = cli("build", model, "--name", "cls", "--version", "1.0.0", "--target", "x86-cpu",
              "--precision", "fp32", "--reference", tmp_path / "r.npz", "--out", tmp_path / "o")
    assert res.code == 0, res.err
    b = read_bundle(Path(res.out.strip()))
    assert b.verify([KeyStore(keys_home).public_key("targets")])
    assert b.manifest.drift is not None and b.manifest.drift.source == "reference"
    assert b.manifest.drift.samples == 50
    bad = cli("build", model, "--name", "cls", "--version", "1.0.1", "--target", "x86-cpu",
              "--precision", "fp32", "--reference", tmp_path / "nope.npz", "--out",
              tmp_path / "o")
    assert bad.code == 1 and "reference data" in bad.err and "Traceback" not in bad.err
    assert not (tmp_path / "o" / "cls-1.0.1.edgebundle").exists()
