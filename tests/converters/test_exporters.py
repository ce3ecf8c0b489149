"""The converter on what real exporters emit: scikit-learn (skl2onnx), tf2onnx, paddle2onnx.

scikit-learn models are trained here on seeded generated data and exported with skl2onnx, both
with its default ZipMap (probabilities as a sequence of maps: refused up front with the export
hint) and with ``zipmap=False`` (built, validated, installed and served by the device agent).
tf2onnx and paddle2onnx exports are reproduced with onnx.helper (tests/converters/zoo.py), as
the frameworks are too heavy to install here.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from converters.model_check import load_source
from converters.validate import accuracy_report, gate_drop
from edgeops.bundle import read_bundle
from edgeops.compare import compare_outputs
from edgeops.errors import BadContentError
from tests.converters import zoo
from tests.converters.conftest import listing

FEATURES = 8
CLASSES = 3


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification, make_regression

    x, y = make_classification(n_samples=400, n_features=FEATURES, n_informative=5,
                               n_classes=CLASSES, random_state=0)
    xr, yr = make_regression(n_samples=400, n_features=FEATURES, noise=0.1, random_state=0)
    return x.astype(np.float32), y.astype(np.int64), xr.astype(np.float32), yr


def _export(name: str, zipmap: bool) -> onnx.ModelProto:
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, xr, yr = _data()
    model: Any
    if name == "logreg":
        model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    elif name == "forest":
        model = RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0).fit(x, y)
    elif name == "mlp":
        model = make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=(64,), max_iter=500, random_state=0)).fit(x, y)
    else:
        model = GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0) \
            .fit(xr, yr)
    is_classifier = name != "gbr"
    options = {"zipmap": False} if is_classifier and not zipmap else None
    return to_onnx(model, x[:1], options=options)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """skl2onnx exports (trained once per module) and their calibration/validation data."""
    import warnings

    pytest.importorskip("sklearn", reason="scikit-learn is in the dev extra")
    pytest.importorskip("skl2onnx", reason="skl2onnx is in the dev extra")

    out = tmp_path_factory.mktemp("skl")
    paths: dict[str, Path] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # sklearn's convergence chatter
        for name in ("logreg", "forest", "mlp", "gbr"):
            paths[name] = zoo.save(_export(name, zipmap=False), out / f"{name}.onnx")
        for name in ("logreg", "forest"):
            paths[f"{name}-zipmap"] = zoo.save(_export(name, zipmap=True),
                                               out / f"{name}-zipmap.onnx")
    x, y, xr, _ = _data()
    np.savez(out / "cls.npz", X=x[:128], labels=y[:128])
    np.savez(out / "cls-val.npz", X=x[200:328], labels=y[200:328])
    np.savez(out / "reg.npz", X=xr[:128])
    paths["cls.npz"], paths["cls-val.npz"] = out / "cls.npz", out / "cls-val.npz"
    paths["reg.npz"] = out / "reg.npz"
    return paths


def _data_for(exported: dict[str, Path], name: str) -> list[str]:
    if name == "gbr":
        return ["--calibration", str(exported["reg.npz"])]
    return ["--calibration", str(exported["cls.npz"]), "--validation", str(exported["cls-val.npz"])]


# --------------------------------------------------------------------------- scikit-learn


def test_skl2onnx_export_has_the_quirks_these_tests_rely_on(exported: dict[str, Path]) -> None:
    """If skl2onnx changes what it emits, the tests below no longer test what they claim."""
    forest = onnx.load(str(exported["forest"]))
    assert {n.op_type for n in forest.graph.node} == {"TreeEnsembleClassifier"}
    assert [o.name for o in forest.graph.output] == ["label", "probabilities"]
    zipped = onnx.load(str(exported["forest-zipmap"]))
    assert zipped.graph.node[-1].op_type == "ZipMap"
    assert zipped.graph.output[1].type.WhichOneof("value") == "sequence_type"
    mlp = onnx.load(str(exported["mlp"]))
    assert {"Scaler", "MatMul"} <= {n.op_type for n in mlp.graph.node}


@pytest.mark.parametrize("name", ["logreg-zipmap", "forest-zipmap"])
def test_zipmap_output_is_refused_up_front_with_the_export_hint(
        cli, keys_home: Path, tmp_path: Path, exported: dict[str, Path], name: str) -> None:
    out = tmp_path / "out"
    res = cli("build", exported[name], "--name", "skl", "--version", "1.0.0",
              "--target", "x86-cpu", "--target", "tflite-cpu", "--out", out)
    assert res.code != 0
    assert "output 'output_probability' (seq(map(int64,tensor(float)))" in res.err
    assert "ZipMap node" in res.err and "options={'zipmap': False}" in res.err
    assert "Traceback" not in res.err
    assert listing(out) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["logreg", "forest", "gbr"])
@pytest.mark.parametrize("precision", [None, "fp32"])
def test_sklearn_model_builds_for_x86(cli, keys_home: Path, tmp_path: Path,
                                      exported: dict[str, Path], name: str,
                                      precision: str | None) -> None:
    """Nothing in these models can be quantised: INT8 (the default) ships FP32 and says why."""
    out = tmp_path / "out"
    args = ["build", exported[name], "--name", "skl", "--version", "1.0.0",
            "--target", "x86-cpu", *_data_for(exported, name), "--out", out]
    res = cli(*args, *(["--precision", precision] if precision else []))
    assert res.code == 0, res.err
    b = read_bundle(Path(res.out.strip()))
    art = b.manifest.artifact_for("x86-cpu")
    assert art is not None and art.precision == "fp32"
    if precision is None:
        assert art.details["requested_precision"] == "int8"
        assert art.details["quantised_nodes"] == 0
        reasons = art.details["float_nodes"]
        assert reasons and all(r.startswith("not quantisable: ai.onnx.ml::")
                               for r in reasons.values())
        assert "int8 requested, FP32 shipped" in res.err
        assert "calibrated on synthetic" not in res.err
    acc = art.metrics["accuracy"]
    assert acc["drop"] == 0.0
    golden = np.load(io.BytesIO(b.read_file(art.golden.path)))   # type: ignore[union-attr]
    if name == "gbr":
        assert acc["gate_metric"] == "channel_cosine_min" and acc["summary"]["cosine_min"] > 0.99999
        assert golden["output/variable"].shape == (4, 1)
        return
    # label: int64 [N] compared by agreement; probabilities: [N, classes] by top-1 and cosine
    assert acc["outputs"]["label"]["label_agreement"] == 1.0
    assert acc["outputs"]["label"]["cosine"] is None
    assert acc["outputs"]["probabilities"]["cosine"] > 0.99999
    assert acc["gate_metric"] == "top1_accuracy"
    assert acc["summary"]["top1_accuracy"] > 0.6           # trained, not chance (1/3)
    assert golden["output/label"].dtype == np.int64 and golden["output/label"].shape == (4,)
    assert golden["output/probabilities"].shape == (4, CLASSES)
    assert [(t.name, t.dtype) for t in b.manifest.outputs] == [("label", "int64"),
                                                                ("probabilities", "float32")]


@pytest.mark.slow
def test_sklearn_mlp_int8_quantises_matmuls_and_keeps_ml_ops_float(
        cli, keys_home: Path, tmp_path: Path, exported: dict[str, Path]) -> None:
    res = cli("build", exported["mlp"], "--name", "mlp", "--version", "1.0.0", "--target",
              "x86-cpu", *_data_for(exported, "mlp"), "--no-perf-aware", "--out", tmp_path)
    assert res.code == 0, res.err
    b = read_bundle(Path(res.out.strip()))
    art = b.manifest.artifact_for("x86-cpu")
    assert art is not None and art.precision == "int8"
    q = onnx.load_from_string(b.read_file(art.file.path))
    mm = [n for n in q.graph.node if n.op_type == "MatMul"]
    producers = {o: n.op_type for n in q.graph.node for o in n.output}
    assert mm and all(producers.get(n.input[1]) == "DequantizeLinear" for n in mm)
    assert any(n.op_type == "Scaler" and n.domain == "ai.onnx.ml" for n in q.graph.node)
    assert art.details["float_nodes"]["Scaler"].startswith("not quantisable: ai.onnx.ml::Scaler")
    assert art.details["float_nodes"]["ArrayFeatureExtractor"].startswith("not quantisable")
    acc = art.metrics["accuracy"]
    assert acc["gate_metric"] == "top1_accuracy" and acc["drop"] <= 0.01
    assert acc["summary"]["label_agreement"] >= 0.97
    assert acc["summary"]["cosine_min"] >= 0.99


@pytest.mark.parametrize("name,ops", [
    ("logreg", ["ai.onnx.ml.Scaler", "ai.onnx.ml.LinearClassifier", "ai.onnx.ml.Normalizer"]),
    ("forest", ["ai.onnx.ml.TreeEnsembleClassifier"]),
    ("mlp", ["ai.onnx.ml.Scaler", "ai.onnx.ml.ArrayFeatureExtractor"]),
])
def test_tflite_names_every_ml_op_at_once(cli, keys_home: Path, tmp_path: Path,
                                          exported: dict[str, Path], name: str,
                                          ops: list[str]) -> None:
    out = tmp_path / "out"
    res = cli("build", exported[name], "--name", "skl", "--version", "1.0.0",
              "--target", "tflite-cpu", "--precision", "fp32", "--out", out)
    assert res.code != 0 and "not supported by the TFLite backend" in res.err
    for op in ops:
        assert op in res.err
    assert res.err.count("(") == res.err.count(")")      # reasons quoted whole in the hint
    assert listing(out) == []


@pytest.mark.slow
def test_quantised_only_target_refuses_a_model_with_nothing_to_quantise(
        cli, keys_home: Path, tmp_path: Path, exported: dict[str, Path]) -> None:
    out = tmp_path / "out"
    res = cli("build", exported["forest"], "--name", "skl", "--version", "1.0.0",
              "--target", "qnn-npu", *_data_for(exported, "forest"), "--out", out)
    assert res.code != 0
    assert "qnn-npu runs quantised models only" in res.err
    assert "node 'TreeEnsembleClassifier' (ai.onnx.ml::TreeEnsembleClassifier" in res.err
    assert listing(out) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["forest", "mlp"])
def test_sklearn_bundle_installs_and_serves_on_the_agent(
        cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exported: dict[str, Path],
        name: str) -> None:
    from device_agent.health import HealthSettings, check_slot
    from device_agent.inference import InferenceService
    from device_agent.installer import Installer, InstallRequest
    from device_agent.slots import SlotStore
    from edgeops.protocol.messages import DevicePhase
    from tests.device_agent.bundles import PASSPHRASE, bundle_parts, make_fleet

    fleet = make_fleet(tmp_path / "fleet")
    monkeypatch.setenv("EDGEOPS_HOME", str(fleet.home))
    monkeypatch.setenv("EDGEOPS_KEY_PASSPHRASE", PASSPHRASE.decode())
    res = cli("build", exported[name], "--name", "skl", "--version", "1.0.0", "--target",
              "x86-cpu", *_data_for(exported, name), "--no-perf-aware", "--out", tmp_path / "o")
    assert res.code == 0, res.err
    keys, threshold = fleet.trusted
    store = SlotStore(tmp_path / "slots")
    inst = Installer(store, target="x86-cpu", trusted=keys, threshold=threshold,
                     health=lambda d, t: check_slot(d, t, HealthSettings(budget_slack=50.0)))
    p = bundle_parts(Path(res.out.strip()), "x86-cpu")
    result = inst.install(InstallRequest(p.manifest, p.signatures, p.artifact, p.golden))
    assert result.phase is DevicePhase.HEALTHY, result.reason
    assert result.health is not None and result.health.samples > 0
    info = store.active()
    assert info is not None
    svc = InferenceService()
    svc.load_slot(store, info)
    x = _data()[0][300:301]
    got = svc.predict({"X": x})
    ref = ort.InferenceSession(str(exported[name]), providers=["CPUExecutionProvider"]) \
        .run(["label", "probabilities"], {"X": x})
    assert got["label"].dtype == np.int64 and got["label"].tolist() == ref[0].tolist()
    np.testing.assert_allclose(got["probabilities"], ref[1], atol=0.05)


def test_label_outputs_are_compared_by_agreement_and_gate_the_build() -> None:
    ref = {"label": np.array([0, 1, 2, 1], np.int64),
           "probabilities": np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]}
    cand = {"label": np.array([0, 1, 2, 2], np.int64), "probabilities": ref["probabilities"]}
    (label, probs) = compare_outputs(ref, cand)
    assert label.label_agreement == 0.75 and probs.label_agreement is None
    report = accuracy_report(ref, cand, classifier_outputs=["probabilities"])
    assert report["summary"]["label_agreement"] == 0.75
    assert report["summary"]["cosine_min"] == 1.0          # labels do not count as cosine
    assert report["outputs"]["label"]["cosine"] is None
    assert gate_drop(report) == ("label_agreement", 0.25)  # the worse of the agreements
    assert gate_drop(report, "top1") == ("top1_agreement", 0.0)
    assert gate_drop(report, "cosine") == ("cosine", 0.0)


def test_repeated_default_domain_import_is_merged(tmp_path: Path) -> None:
    """skl2onnx 1.20 imports the default domain twice; ORT's quantiser needs one import."""
    m = zoo.convnet(13)
    m.opset_import.append(onnx.helper.make_opsetid("", 13))
    src = load_source(zoo.save(m, tmp_path / "dup.onnx"))
    assert sorted((o.domain, o.version) for o in src.model.opset_import) == \
        sorted({(o.domain, o.version) for o in m.opset_import})


def test_conflicting_default_domain_imports_are_refused(tmp_path: Path) -> None:
    m = zoo.convnet(13)
    m.opset_import.append(onnx.helper.make_opsetid("ai.onnx", 17))
    with pytest.raises(BadContentError, match="imports domain 'ai.onnx' at opsets 13 and 17"):
        load_source(zoo.save(m, tmp_path / "conflict.onnx"))


# --------------------------------------------------------------------------- tf2onnx, paddle2onnx

# name: (model builder, input name, sample shape, source opset, dynamic batch dim, tflite precision)
EXPORTS: dict[str, tuple[Any, str, tuple[int, ...], int, str, str]] = {
    # An untrained toy classified on noise flips 1 of 64 near-tied samples in TFLite INT8, so
    # tf2onnx's TFLite artifact is checked at the target's default precision (FP32).
    "tf2onnx": (zoo.tf2onnx_convnet, "input_1:0", (16, 16, 3), 13, "unk__612", "fp32"),
    "paddle2onnx-opset11": (lambda: zoo.paddle2onnx_mobilenet_block(11), "x", (3, 16, 16), 11,
                            "p2o.DynamicDimension.0", "int8"),
    "paddle2onnx-opset9": (lambda: zoo.paddle2onnx_mobilenet_block(9), "x", (3, 16, 16), 9,
                           "p2o.DynamicDimension.0", "int8"),
}


# The toys are untrained and classify noise, so a few of 64 samples are near ties: which one
# flips depends on the weights' width, and tf2onnx flips 1 of 64 (1.56%) with x86-cpu's 7-bit
# weights (on every build machine since the plan follows the target), as it did with 8-bit ones
# on a VNNI machine. One flip is allowed; the cosine check stays tight.
_NEAR_TIE_BUDGET = 0.02


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPORTS))
def test_exporter_quirks_build_for_x86_int8_and_tflite(cli, keys_home: Path, tmp_path: Path,
                                                      name: str) -> None:
    make, inp, shape, opset, batch, tflite_precision = EXPORTS[name]
    model = zoo.save(make(), tmp_path / "model.onnx")
    cal = tmp_path / "cal.npz"
    np.savez(cal, **{inp: np.random.default_rng(0).standard_normal((64, *shape))
                     .astype(np.float32)})
    res = cli("build", model, "--name", "exp", "--version", "1.0.0", "--target", "x86-cpu",
              "--target", "tflite-cpu", "--calibration", cal, "--no-perf-aware",
              "--precision", f"x86-cpu=int8,tflite-cpu={tflite_precision}",
              "--max-accuracy-drop", str(_NEAR_TIE_BUDGET), "--out", tmp_path)
    assert res.code == 0, res.err
    b = read_bundle(Path(res.out.strip()))
    (spec,) = b.manifest.inputs
    assert spec.name == inp and spec.shape == (batch, *shape)   # names and dims as exported
    x86 = b.manifest.artifact_for("x86-cpu")
    assert x86 is not None and x86.precision == "int8"
    assert x86.details["opset"] == {"source": opset, "artifact": max(opset, 13)}
    assert x86.details["quantised_nodes"] >= 3
    tfl = b.manifest.artifact_for("tflite-cpu")
    assert tfl is not None and tfl.precision == tflite_precision
    for art in (x86, tfl):
        acc = art.metrics["accuracy"]
        # the Softmax behind the exporter's Identity chain makes it a classifier: top-1 gates
        assert acc["gate_metric"] == "top1_agreement", art.target
        assert acc["drop"] <= _NEAR_TIE_BUDGET, art.target
        assert acc["summary"]["cosine_min"] >= 0.99, art.target
    if name == "tf2onnx":
        # NHWC in, Transpose to NCHW: the TFLite graph takes the NHWC input as it is and the
        # Transpose pair cancels out; the record says "as the ONNX input", not "NCHW"
        assert tfl.details["io_layout"][inp] == {"layout": "as-onnx",
                                                 "perm_from_onnx": [0, 1, 2, 3]}
        assert tfl.details["transposes"] == 0
    q = onnx.load_from_string(b.read_file(x86.file.path))
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
    assert max(o.version for o in q.opset_import if o.domain in ("", "ai.onnx")) >= 13
