"""The example model is really trained: it classifies held-out data well, and deterministically.

Both variants are session fixtures (tests/conftest.py), each trained once by its own call of
``make_vehicle_classifier``: two independent trainings, which is what determinism is about.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from edgeops.examples import ExampleModel


def test_vehicle_classifier_is_trained_and_deterministic(
        example_model: ExampleModel, broken_example_model: ExampleModel) -> None:
    a, b = example_model, broken_example_model
    # Deterministic: the broken variant is the same training with row 0 of the first layer set
    # to +inf; with that row put back, the two files hold the same model, byte for byte.
    good, bad = onnx.load(str(a.model)), onnx.load(str(b.model))
    w_good, w_bad = (next(numpy_helper.to_array(i) for i in m.graph.initializer
                          if i.name == "fc1.weight") for m in (good, bad))
    assert np.isposinf(w_bad[0]).all()
    assert np.array_equal(w_good[1:], w_bad[1:])
    for init in bad.graph.initializer:
        if init.name == "fc1.weight":
            init.CopyFrom(numpy_helper.from_array(w_good, init.name))
    assert bad.SerializeToString() == good.SerializeToString()
    assert a.model.read_bytes() == good.SerializeToString()    # the file is what was compared
    assert a.validation.read_bytes() == b.validation.read_bytes()

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
