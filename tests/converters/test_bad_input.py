"""Bad input to `edgeops build`: one clear error line each, exit 1 or 2, nothing in --out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.converters import zoo
from tests.converters.conftest import listing


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return zoo.save(zoo.convnet(13), tmp_path / "model.onnx")


def _build(cli, model: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return cli("build", model, "--name", "m", "--version", "1.0.0", "--out", out, *extra)


def _assert_refused(res, out: Path, code: int, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert res.code == code, res.err
    lines = [ln for ln in res.err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.err
    assert "Traceback" not in res.err
    for n in needles:
        assert n in lines[0], lines[0]
    assert listing(out) == []


def test_not_onnx(cli, keys_home: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.onnx"
    bogus.write_text("this is a README, not a model\n" * 20)
    out = tmp_path / "out"
    _assert_refused(_build(cli, bogus, out, "--target", "x86-cpu"), out, 1, "not an ONNX model")


def test_truncated_file(cli, keys_home: Path, model: Path, tmp_path: Path) -> None:
    data = model.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    _assert_refused(_build(cli, cut, out, "--target", "x86-cpu"), out, 1, "cut.onnx")


def test_fails_onnx_checker(cli, keys_home: Path, tmp_path: Path) -> None:
    m = zoo.convnet(13)
    m.graph.node[0].input[1] = "no_such_weight"       # dangling input: checker rejects it
    bad = tmp_path / "bad.onnx"
    onnx.save(m, str(bad))
    out = tmp_path / "out"
    _assert_refused(_build(cli, bad, out, "--target", "x86-cpu"), out, 1, "onnx.checker")


def test_unsupported_ops_named_all_at_once(cli, keys_home: Path, tmp_path: Path) -> None:
    p = zoo.save(zoo.unsupported_ops(), tmp_path / "custom.onnx")
    out = tmp_path / "out"
    res = _build(cli, p, out, "--target", "x86-cpu")
    _assert_refused(res, out, 1, "2 unsupported node(s)", "fancy1", "com.example::FancyNorm",
                    "typo_relu", "Reluu")
    assert "ok_relu" not in res.err


def test_unknown_target(cli, keys_home: Path, model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _assert_refused(_build(cli, model, out, "--target", "x86-gpu"), out, 2,
                    "unknown target 'x86-gpu'", "x86-cpu")


def test_precision_not_offered(cli, keys_home: Path, model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _assert_refused(_build(cli, model, out, "--target", "cuda-gpu", "--precision", "int8"),
                    out, 2, "cuda-gpu", "int8")


@pytest.mark.parametrize("spec", ["x86-cpu=", "arm64-cpu=int8", "x86-cpu=int4"])
def test_bad_per_target_precision(cli, keys_home: Path, model: Path, tmp_path: Path,
                                  spec: str) -> None:
    out = tmp_path / "out"
    _assert_refused(_build(cli, model, out, "--target", "x86-cpu", "--precision", spec),
                    out, 2, "precision")


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(("arrays", "needle"), [
    ({"image": np.zeros((4, 3, 16, 16), np.float32)}, "missing ['x'], unexpected ['image']"),
    ({"x": np.zeros((4, 3, 8, 8), np.float32)}, "has shape (4, 3, 8, 8)"),
    ({"x": np.zeros((4, 16, 16), np.float32)}, "expects rank 4"),
    ({"x": np.zeros((4, 3, 16, 16), np.int32)}, "dtype int32"),
    ({"x": np.zeros((0, 3, 16, 16), np.float32)}, "set is empty"),
], ids=["wrong-names", "wrong-shape", "wrong-rank", "wrong-dtype", "empty"])
def test_bad_calibration_data(cli, keys_home: Path, model: Path, tmp_path: Path,
                              arrays: dict[str, np.ndarray], needle: str) -> None:
    cal = _npz(tmp_path / "cal.npz", **arrays)
    out = tmp_path / "out"
    _assert_refused(_build(cli, model, out, "--target", "x86-cpu", "--calibration", cal),
                    out, 1, "calibration", needle)


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_calibration_data(cli, keys_home: Path, model: Path, tmp_path: Path,
                                     bad: float) -> None:
    x = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    x[3, 1, 2, 2] = bad
    cal = _npz(tmp_path / "cal.npz", x=x)
    out = tmp_path / "out"
    _assert_refused(_build(cli, model, out, "--target", "x86-cpu", "--calibration", cal),
                    out, 1, "1 NaN or Inf values")


def test_bad_validation_data_named_as_validation(cli, keys_home: Path, model: Path,
                                                 tmp_path: Path) -> None:
    val = _npz(tmp_path / "val.npz", x=np.zeros((2, 3, 9, 9), np.float32))
    out = tmp_path / "out"
    _assert_refused(_build(cli, model, out, "--target", "x86-cpu", "--validation", val),
                    out, 1, "validation input 'x'")


def test_calibration_file_not_npz(cli, keys_home: Path, model: Path, tmp_path: Path) -> None:
    cal = tmp_path / "cal.npz"
    cal.write_bytes(b"PK\x03\x04 broken zip")
    out = tmp_path / "out"
    _assert_refused(_build(cli, model, out, "--target", "x86-cpu", "--calibration", cal),
                    out, 1, "not a readable .npz")


def test_missing_model_is_usage_error(cli, keys_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _assert_refused(_build(cli, tmp_path / "nope.onnx", out, "--target", "x86-cpu"), out, 2,
                    "does not exist")


@pytest.mark.parametrize("shape", ["x=1x3xAx16", "x", "=1x3", "x=0x3x16x16"])
def test_bad_input_shape_option(cli, keys_home: Path, model: Path, tmp_path: Path,
                                shape: str) -> None:
    out = tmp_path / "out"
    _assert_refused(_build(cli, model, out, "--target", "x86-cpu", "--input-shape", shape),
                    out, 2, "--input-shape")


def test_input_shape_for_unknown_input(cli, keys_home: Path, model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _assert_refused(_build(cli, model, out, "--target", "x86-cpu", "--input-shape",
                           "image=1x3x16x16"), out, 2, "unknown inputs ['image']")


def test_dynamic_dims_need_a_shape_for_static_targets(cli, keys_home: Path,
                                                      tmp_path: Path) -> None:
    p = zoo.save(zoo.convnet(13, dynamic_hw=True), tmp_path / "dyn.onnx")
    out = tmp_path / "out"
    _assert_refused(_build(cli, p, out, "--target", "qnn-npu"), out, 2, "static shapes")


def test_missing_key_store(cli, tmp_path: Path, model: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEOPS_HOME", str(tmp_path / "empty-home"))
    out = tmp_path / "out"
    _assert_refused(_build(cli, model, out, "--target", "x86-cpu"), out, 1,
                    "edgeops keys init")


def test_wrong_passphrase(cli, keys_home: Path, model: Path, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEOPS_KEY_PASSPHRASE", "wrong")
    out = tmp_path / "out"
    _assert_refused(_build(cli, model, out, "--target", "x86-cpu"), out, 1, "passphrase")


@pytest.mark.parametrize(("opt", "value", "needle"), [
    ("--name", "Bad Name", "--name"), ("--version", "1.0", "semantic version")])
def test_bad_name_or_version(cli, keys_home: Path, model: Path, tmp_path: Path, opt: str,
                             value: str, needle: str) -> None:
    out = tmp_path / "out"
    args = {"--name": "m", "--version": "1.0.0", opt: value}
    res = cli("build", model, "--name", args["--name"], "--version", args["--version"],
              "--target", "x86-cpu", "--out", out)
    _assert_refused(res, out, 2, needle)


@pytest.mark.parametrize(("opt", "value"), [
    ("--mixed-precision-layers", "0"), ("--mixed-precision-prefixes", "0"),
    ("--mixed-precision-prefixes", "-2")])
def test_mixed_precision_bounds_below_one_are_usage_errors(cli, keys_home: Path, model: Path,
                                                           tmp_path: Path, opt: str,
                                                           value: str) -> None:
    out = tmp_path / "out"
    _assert_refused(_build(cli, model, out, "--target", "x86-cpu", opt, value), out, 2,
                    f"{opt} must be at least 1")


@pytest.mark.slow
def test_accuracy_gate_failure_writes_nothing(cli, keys_home: Path, tmp_path: Path) -> None:
    p = zoo.save(zoo.outlier_mlp(), tmp_path / "mlp.onnx")
    x = np.random.default_rng(0).standard_normal((32, 4, 16)).astype(np.float32)
    cal = _npz(tmp_path / "cal.npz", x=x)
    out = tmp_path / "out"
    res = _build(cli, p, out, "--target", "x86-cpu", "--calibration", cal,
                 "--max-accuracy-drop", "0", "--no-perf-aware")
    _assert_refused(res, out, 1, "target x86-cpu", "cosine",
                    "limited by mm2 (recovers", "a budget of at least")


@pytest.mark.slow
def test_a_bounded_search_is_refused_saying_what_it_did_not_search(cli, keys_home: Path,
                                                                  tmp_path: Path) -> None:
    p = zoo.save(zoo.outlier_mlp(depth=6), tmp_path / "mlp.onnx")
    x = np.random.default_rng(0).standard_normal((32, 4, 16)).astype(np.float32)
    cal = _npz(tmp_path / "cal.npz", x=x)
    out = tmp_path / "out"
    res = _build(cli, p, out, "--target", "x86-cpu", "--calibration", cal,
                 "--max-accuracy-drop", "0", "--no-perf-aware",
                 "--mixed-precision-layers", "1", "--mixed-precision-prefixes", "1")
    _assert_refused(res, out, 1, "target x86-cpu", "cosine", "(1 measured one by one)",
                    "the try budget (--mixed-precision-prefixes 1)", "was not searched for")


def test_source_model_that_outputs_nan_is_refused(cli, keys_home: Path, tmp_path: Path,
                                                  broken_example_model) -> None:
    """A model with corrupted weights (here: the demo's broken classifier) is not built at all."""
    ex = broken_example_model
    out = tmp_path / "out"
    res = _build(cli, ex.model, out, "--target", "x86-cpu", "--precision", "fp32",
                 "--validation", ex.validation)
    _assert_refused(res, out, 1, "the source model outputs NaN or Inf", "'probabilities'")
