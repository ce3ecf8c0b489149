"""Models over 2 GB (external data): the build's large-model path, on a small model.

A real 2 GB model is too heavy for CI (see benchmarks/converter_large.py, run by hand), so these
tests lower the one threshold that decides "over what one protobuf holds"
(``converters.onnx_utils.PROTOBUF_SAFE_BYTES``) to half the test model's weights: the FP32
source then counts as too big for one file while its INT8 artifact fits, and every branch the
2 GB model takes runs for real (opset upgrade from disk, pre-processing, calibration and
quantisation with external data, folding the artifact back into one file, the refusals).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from benchmarks.converter_large import make_data, make_model
from converters.api import BuildRequest, BuiltArtifact
from converters.build import build, check_one_file
from converters.model_check import initializer_bytes
from converters.onnx_utils import has_external_data, inline_if_fits, proto_bytes
from edgeops.errors import AccuracyGateError, UnsupportedModelError
from tests.converters import zoo
from tests.converters.conftest import listing

D_MODEL, D_FF, SEQ = 64, 512, 4


def _large_model(tmp_path: Path, opset: int = 12) -> Path:
    src = tmp_path / "src" / "model.onnx"
    src.parent.mkdir(parents=True)
    make_model(src, layers=2, d_model=D_MODEL, d_ff=D_FF, seq=SEQ, opset=opset)
    make_data(tmp_path / "cal.npz", 16, SEQ, D_MODEL, seed=1)
    make_data(tmp_path / "val.npz", 8, SEQ, D_MODEL, seed=2)
    return src


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A source model whose FP32 weights exceed the (lowered) one-file limit, INT8 fitting."""
    src = _large_model(tmp_path)
    weights = initializer_bytes(onnx.load(str(src)))
    monkeypatch.setattr("converters.onnx_utils.PROTOBUF_SAFE_BYTES", weights // 2)
    return src


def _request(src: Path, tmp_path: Path, **kw) -> BuildRequest:  # type: ignore[no-untyped-def]
    return BuildRequest(model=src, name="m", version="1.0.0", targets=("x86-cpu",),
                        calibration=tmp_path / "cal.npz", validation=tmp_path / "val.npz",
                        max_accuracy_drop=kw.pop("max_accuracy_drop", 0.05),
                        options=kw.pop("options", {"perf_aware": True}), **kw)


def test_int8_of_a_large_source_is_one_self_contained_file(small_limit: Path,
                                                           tmp_path: Path) -> None:
    work = tmp_path / "work"
    out = build(_request(small_limit, tmp_path), lambda _m: None, work)
    (art,) = out.artifacts
    assert out.source.external_data and out.source.large
    # upgraded from opset 12 (graph converted without its weights, then weights loaded)
    assert art.details["opset"] == {"source": 12, "artifact": 13}
    assert art.details["performance_aware"] == "skipped: the model is over 2 GB (external data)"
    assert art.details["quantised_nodes"] >= 4
    # the quantiser wrote external data; the artifact was folded back into one file
    assert not has_external_data(art.path)
    assert sorted(p.name for p in art.path.parent.glob("model.onnx*")) == ["model.onnx"]
    assert not (work / "x86-cpu" / "calibration-augmented").exists()
    assert art.metrics["accuracy"]["summary"]["cosine_min"] > 0.99
    # loads and runs with the source and its .data gone
    for f in small_limit.parent.iterdir():
        f.unlink()
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    x = np.zeros((1, SEQ, D_MODEL), np.float32)
    assert sess.run(None, {"x": x})[0].shape == (1, SEQ, D_MODEL)


def test_int8_dynamic_of_a_large_source_is_one_file(small_limit: Path, tmp_path: Path) -> None:
    out = build(_request(small_limit, tmp_path, precision="int8-dynamic"), lambda _m: None,
                tmp_path / "work")
    (art,) = out.artifacts
    assert not has_external_data(art.path)
    assert art.metrics["accuracy"]["summary"]["cosine_min"] > 0.99


def test_accuracy_aware_pass_ranks_nodes_of_a_large_model(small_limit: Path,
                                                          tmp_path: Path) -> None:
    # A budget of 0 forces the sensitivity ranking, which runs the FP32 model from disk here.
    req = _request(small_limit, tmp_path, max_accuracy_drop=0.0, options={"perf_aware": False})
    try:
        (art,) = build(req, lambda _m: None, tmp_path / "work").artifacts
    except AccuracyGateError as exc:
        assert "limited by " in exc.message and "none found" not in exc.message
    else:
        assert any(v.startswith("accuracy") for v in art.details["float_nodes"].values())


def test_fp32_of_a_large_source_is_refused_before_any_work(small_limit: Path,
                                                           tmp_path: Path) -> None:
    seen: list[str] = []
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UnsupportedModelError) as err:
        build(_request(small_limit, tmp_path, precision="fp32"), seen.append, work)
    assert "target x86-cpu: the fp32 artifact of this model would hold" in err.value.message
    assert "--precision x86-cpu=int8" in err.value.hint
    assert not any("reference" in m for m in seen)       # refused before the FP32 run
    assert listing(work) == []


def test_fp32_refusal_on_the_cli_is_one_line_and_writes_nothing(cli, keys_home: Path,  # type: ignore[no-untyped-def]
                                                                small_limit: Path,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = cli("build", small_limit, "--name", "big", "--version", "1.0.0", "--target",
              "x86-cpu", "--precision", "fp32", "--out", out)
    assert res.code != 0
    errors = [ln for ln in res.err.splitlines() if ln.startswith("error")]
    assert len(errors) == 1 and "over the 2 GB one ONNX file can hold" in errors[0]
    assert "--precision x86-cpu=int8" in res.err
    assert not out.exists() or listing(out) == []


def test_no_precision_fits_names_the_target(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    src = _large_model(tmp_path)
    monkeypatch.setattr("converters.onnx_utils.PROTOBUF_SAFE_BYTES", 1000)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UnsupportedModelError) as err:
        build(_request(src, tmp_path), lambda _m: None, work)
    assert "x86-cpu offers no precision that small" in err.value.hint


def test_an_artifact_with_external_data_is_refused(tmp_path: Path) -> None:
    p = zoo.external_data(tmp_path / "a" / "model.onnx")
    art = BuiltArtifact(target="x86-cpu", path=p, format="onnx", runtime="onnxruntime",
                        providers=("CPUExecutionProvider",), precision="int8",
                        golden_path=tmp_path / "golden.npz", metrics={}, tolerance={})
    with pytest.raises(UnsupportedModelError) as err:
        check_one_file(art)
    assert "target x86-cpu: the int8 artifact came out over the 2 GB" in err.value.message
    inline_if_fits(p)                 # folded into one file, it is accepted
    check_one_file(art)


def test_inline_if_fits_folds_small_models_and_keeps_big_ones(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    p = zoo.external_data(tmp_path / "a" / "model.onnx")
    monkeypatch.setattr("converters.onnx_utils.PROTOBUF_SAFE_BYTES", 100)
    assert inline_if_fits(p) == p and has_external_data(p)        # too big: left as it is
    monkeypatch.undo()
    inline_if_fits(p)
    assert not has_external_data(p) and not (p.parent / "model.onnx.data").exists()
    assert proto_bytes(onnx.load(str(p))) == p.stat().st_size
    ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])


def test_source_digest_covers_the_external_weights(tmp_path: Path) -> None:
    import hashlib

    from converters.model_check import load_source

    p = zoo.external_data(tmp_path / "a" / "model.onnx")
    data = p.parent / "model.onnx.data"
    src = load_source(p)
    assert src.sha256 == hashlib.sha256(p.read_bytes() + data.read_bytes()).hexdigest()
    assert src.size == p.stat().st_size + data.stat().st_size
    # other weights, same graph file: another source digest
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0x01
    data.write_bytes(bytes(raw))
    assert load_source(p).sha256 != src.sha256


def test_fp16_of_a_large_source_builds_without_in_memory_shape_inference(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    src = _large_model(tmp_path, opset=13)
    weights = initializer_bytes(onnx.load(str(src)))
    monkeypatch.setattr("converters.onnx_utils.PROTOBUF_SAFE_BYTES", int(weights * 0.6))
    req = BuildRequest(model=src, name="m", version="1.0.0", targets=("cuda-gpu",),
                       precision="fp16", validation=tmp_path / "val.npz")
    (art,) = build(req, lambda _m: None, tmp_path / "work").artifacts
    assert not has_external_data(art.path)
    assert art.metrics["accuracy"]["summary"]["cosine_min"] > 0.999
