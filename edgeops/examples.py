"""Example models the project makes itself, so the demo and docs need no downloads.

``vehicle-classifier``: a small MLP that classifies vehicles seen by a roadside sensor (length,
height, axle count, speed, ...) into car, van, truck, bus and bicycle. The data are generated
from simple physical distributions per class, and the network is trained here with numpy
(mini-batch gradient descent with Adam), so its weights are real trained weights, then written
to ONNX with ``onnx.helper``. Deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CLASSES", "FEATURES", "ExampleModel", "make_vehicle_classifier", "vehicle_data"]

CLASSES = ("car", "van", "truck", "bus", "bicycle")
FEATURES = ("length_m", "height_m", "axles", "speed_kmh", "mass_t", "wheelbase_m",
            "lane", "hour_sin", "hour_cos", "rain_mm", "reflectivity", "noise_db")

# Per class: mean and std of length, height, axles, speed, mass, wheelbase, noise.
_CLASS_PARAMS = {
    "car": ((4.4, 0.4), (1.5, 0.1), (2, 0), (52, 12), (1.4, 0.3), (2.7, 0.2), (68, 4)),
    "van": ((5.6, 0.5), (2.3, 0.2), (2, 0), (48, 10), (2.8, 0.5), (3.4, 0.3), (72, 4)),
    "truck": ((12.0, 3.0), (3.6, 0.3), (4, 1), (40, 8), (18.0, 7.0), (5.5, 1.0), (82, 5)),
    "bus": ((12.0, 0.8), (3.1, 0.15), (2, 0.3), (35, 8), (13.0, 2.0), (6.0, 0.4), (78, 4)),
    "bicycle": ((1.8, 0.1), (1.7, 0.1), (2, 0), (18, 5), (0.1, 0.02), (1.1, 0.05), (45, 4)),
}


@dataclass(frozen=True)
class ExampleModel:
    model: Path
    calibration: Path
    validation: Path
    accuracy: float


def vehicle_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` generated sensor readings (float32, standardised later) and class labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    x = np.zeros((n, len(FEATURES)), np.float32)
    hours = rng.uniform(0, 24, n)
    for ci, name in enumerate(CLASSES):
        idx = labels == ci
        k = int(idx.sum())
        (lm, ls), (hm, hs), (am, as_), (sm, ss), (mm, ms), (wm, ws), (nm, ns) = _CLASS_PARAMS[name]
        x[idx, 0] = rng.normal(lm, ls, k)
        x[idx, 1] = rng.normal(hm, hs, k)
        x[idx, 2] = np.maximum(2, np.round(rng.normal(am, as_, k)))
        x[idx, 3] = np.clip(rng.normal(sm, ss, k), 0, None)
        x[idx, 4] = np.clip(rng.normal(mm, ms, k), 0.05, None)
        x[idx, 5] = rng.normal(wm, ws, k)
        x[idx, 11] = rng.normal(nm, ns, k)
    x[:, 6] = rng.integers(0, 3, n)
    x[:, 7], x[:, 8] = np.sin(hours / 24 * 2 * np.pi), np.cos(hours / 24 * 2 * np.pi)
    x[:, 9] = rng.exponential(0.5, n)
    x[:, 10] = rng.uniform(0, 1, n)
    return x, labels


def _train(x: np.ndarray, y: np.ndarray, hidden: int, seed: int, epochs: int
           ) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    d, c = x.shape[1], len(CLASSES)
    params = [rng.normal(0, np.sqrt(2 / d), (d, hidden)), np.zeros(hidden),
              rng.normal(0, np.sqrt(2 / hidden), (hidden, hidden)), np.zeros(hidden),
              rng.normal(0, np.sqrt(1 / hidden), (hidden, c)), np.zeros(c)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    onehot = np.eye(c)[y]
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for s in range(0, len(x), 128):
            b = order[s : s + 128]
            xb, yb = x[b].astype(np.float64), onehot[b]
            w1, b1, w2, b2, w3, b3 = params
            h1 = np.maximum(xb @ w1 + b1, 0)
            h2 = np.maximum(h1 @ w2 + b2, 0)
            z = h2 @ w3 + b3
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            dz = (p - yb) / len(b)
            dh2 = (dz @ w3.T) * (h2 > 0)
            dh1 = (dh2 @ w2.T) * (h1 > 0)
            grads = [xb.T @ dh1, dh1.sum(0), h1.T @ dh2, dh2.sum(0), h2.T @ dz, dz.sum(0)]
            step += 1
            for i, g in enumerate(grads):
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g * g
                mh, vh = m[i] / (1 - 0.9**step), v[i] / (1 - 0.999**step)
                params[i] = params[i] - 3e-3 * mh / (np.sqrt(vh) + 1e-8)
    return params


def make_vehicle_classifier(out_dir: Path, *, seed: int = 7, hidden: int = 64,
                            broken: bool = False) -> ExampleModel:
    """Train and write ``model.onnx`` plus ``calibration.npz`` and ``validation.npz``.

    ``broken=True`` writes the same network with a corrupted first layer (as a bad training
    run or a bad export would), so it produces NaN: the demo's canary must catch it.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out_dir.mkdir(parents=True, exist_ok=True)
    x, y = vehicle_data(6000, seed)
    mean, std = x.mean(0), x.std(0) + 1e-6
    params = _train((x - mean) / std, y, hidden, seed, epochs=12)
    w1, b1, w2, b2, w3, b3 = (p.astype(np.float32) for p in params)
    # Fold the standardisation into the first layer: the model takes raw sensor features.
    w1f = (w1 / std[:, None]).astype(np.float32)
    b1f = (b1 - (mean / std) @ w1).astype(np.float32)
    if broken:
        w1f = w1f.copy()
        w1f[0, :] = np.float32(np.inf)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((w1f, "fc1.weight"), (b1f, "fc1.bias"), (w2, "fc2.weight"), (b2, "fc2.bias"),
              (w3, "head.weight"), (b3, "head.bias"))]
    nodes = [
        helper.make_node("Gemm", ["features", "fc1.weight", "fc1.bias"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("Gemm", ["a1", "fc2.weight", "fc2.bias"], ["h2"], name="fc2"),
        helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
        helper.make_node("Gemm", ["a2", "head.weight", "head.bias"], ["logits"], name="head"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "vehicle_classifier",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(FEATURES)])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                       ["batch", len(CLASSES)])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="edgeops.examples", producer_version="1")
    model.doc_string = "Vehicle classifier (car, van, truck, bus, bicycle) from roadside sensors"
    onnx.checker.check_model(model)
    model_path = out_dir / "model.onnx"
    # the lowest IR version opset 13 allows, not the onnx package's newest: older runtimes load it
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    onnx.save(model, model_path)

    xc, _ = vehicle_data(256, seed + 1)
    xv, yv = vehicle_data(512, seed + 2)
    np.savez(out_dir / "calibration.npz", features=xc)
    np.savez(out_dir / "validation.npz", features=xv, labels=yv)
    a1 = np.maximum(xv @ w1f + b1f, 0)
    logits = np.maximum(a1 @ w2 + b2, 0) @ w3 + b3
    acc = float((logits.argmax(1) == yv).mean()) if not broken else 0.0
    return ExampleModel(model_path, out_dir / "calibration.npz", out_dir / "validation.npz", acc)
