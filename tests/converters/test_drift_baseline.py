"""The build writes the drift reference from the validation data into the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converters.api import BuildRequest
from converters.build import build
from converters.package import manifest_for
from edgeops.bundle import Manifest
from tests.converters import zoo


def _build(model: Path, tmp_path: Path, **kw):  # type: ignore[no-untyped-def]
    req = BuildRequest(model=model, name="m", version="1.0.0", targets=("x86-cpu",),
                       precision="fp32", max_accuracy_drop=0.5,
                       options={"perf_aware": False}, **kw)
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
