"""The example model is really trained: it classifies held-out data well, and deterministically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgeops.examples import ExampleModel, make_vehicle_classifier


def test_vehicle_classifier_is_trained_and_deterministic(tmp_path: Path) -> None:
    a = make_vehicle_classifier(tmp_path / "a")
    b = make_vehicle_classifier(tmp_path / "b")
    assert a.model.read_bytes() == b.model.read_bytes()
    data = np.load(a.validation)
    sess = ort.InferenceSession(str(a.model), providers=["CPUExecutionProvider"])
    probs = sess.run(None, {"features": data["features"]})[0]
    accuracy = float((probs.argmax(1) == data["labels"]).mean())
    assert accuracy > 0.9                       # five classes: chance is 0.2
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_broken_variant_produces_nan(broken_example_model: ExampleModel) -> None:
    m = broken_example_model
    data = np.load(m.validation)
    sess = ort.InferenceSession(str(m.model), providers=["CPUExecutionProvider"])
    assert np.isnan(sess.run(None, {"features": data["features"][:8]})[0]).any()
