"""Real models as they come (issue 15, sections 1-2): intake, data forms, sequences, failures.

Every case the issue reports is fed here through ``edgeops build`` or the Python API: the
voice-activity detector (state ``2 x batch x 128``, scalar int64 ``sr``) with shapes and
synthetic data, with whole-input speech, in sequence mode against a held-out espeak-ng stream;
an already-quantised model; failures deep inside ONNX Runtime and its quantiser.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.converters.conftest import listing
from tests.realdata import PHRASES, speech
from tests.realzoo import model_path
from tests.realzoo_made import prequantised, vad_16k

pytestmark = pytest.mark.slow

_FRAME, _CONTEXT, _RATE = 512, 64, 16000


def _frames(phrases: tuple[str, ...], gap_s: float = 0.3) -> np.ndarray:
    """Speech with silences between phrases, as the VAD is fed: whole inputs (N, 1, 576),
    each 512-sample frame after the 64 samples before it."""
    gap = np.zeros(int(gap_s * _RATE), np.float32)
    x = np.concatenate([p for s in phrases for p in (gap, speech(s))] + [gap])
    frames, ctx = [], np.zeros(_CONTEXT, np.float32)
    for i in range(len(x) // _FRAME):
        chunk = x[i * _FRAME:(i + 1) * _FRAME]
        frames.append(np.concatenate([ctx, chunk]))
        ctx = chunk[-_CONTEXT:]
    return np.stack(frames)[:, None, :]


def _build(cli, model: Path, out: Path, *extra: object):  # type: ignore[no-untyped-def]
    return cli("build", model, "--name", "m", "--version", "1.0.0", "--out", out,
               "--target", "x86-cpu", *extra)


def _one_line(res, out: Path) -> str:  # type: ignore[no-untyped-def]
    lines = [ln for ln in res.err.splitlines() if ln.startswith("error:")]
    assert res.code != 0 and len(lines) == 1 and "Traceback" not in res.err, res.err
    assert listing(out) == []
    return lines[0]


def test_vad_with_fixed_shapes_and_synthetic_data(cli, keys_home: Path, tmp_path: Path) -> None:
    """Was: ORT's 'Got invalid dimensions for input: state ... Got: 1 Expected: 2' traceback."""
    vad = model_path("vad")
    out = tmp_path / "out"
    shapes = ("--input-shape", "input=1x576", "--input-shape", "state=2x1x128")
    line = _one_line(_build(cli, vad, out, *shapes), out)
    assert "input 'sr' is a int64 scalar" in line and "--input-value sr=" in line
    fixed = (*shapes, "--input-shape", "sr=scalar", "--input-value", "sr=16000")
    # On noise the FP32 VAD never fires: its decisions give the gate nothing to judge.
    line = _one_line(_build(cli, vad, out, *fixed), out)
    assert "decision_agreement cannot judge this artifact: the FP32 score is at or below 0.5 " \
        "at every step of the 16 synthetic validation samples" in line
    res = _build(cli, vad, out, *fixed, "--gate-metric", "cosine")
    assert res.code == 0, res.err
    assert "stateN -> state" in res.err                   # sequence mode found and reported


def test_vad_shape_that_breaks_a_node_is_one_line(cli, keys_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    line = _one_line(_build(cli, model_path("vad"), out, "--input-shape", "input=1x1",
                            "--input-value", "sr=16000"), out)
    assert "silero_vad.onnx" in line and "node '" in line and "--input-shape" in line


def test_vad_from_whole_input_speech(cli, keys_home: Path, tmp_path: Path) -> None:
    """ORT CalibrationDataReader-style data: (N, 1, 576) frames, (N,) sample rates."""
    frames = _frames(PHRASES[:1])
    np.savez(tmp_path / "cal.npz", input=frames, sr=np.full(len(frames), _RATE, np.int64))
    out = tmp_path / "out"
    res = _build(cli, model_path("vad-ifless"), out, "--calibration", tmp_path / "cal.npz")
    assert res.code == 0, res.err
    report = json.loads((out / "m-1.0.0.report.json").read_text())
    assert report["data"]["sequence"]["states"] == {"stateN": "state"}
    assert report["data"]["calibration"]["samples"] == len(frames)


def _agreement(model: Path, artifact: Path, frames: np.ndarray) -> float:
    """VAD decisions (probability > 0.5) of the artifact vs FP32 over a stream, each model
    carrying its own state from frame to frame as it does in service."""
    from converters.data import SampleSet
    from converters.validate import run_onnx

    n = len(frames)
    s = SampleSet({"input": frames[:, 0, :], "sr": np.full(n, _RATE, np.int64),
                   "state": np.zeros((n, 2, 128), np.float32)},
                  {"input": 0, "sr": None, "state": 1})
    ref = run_onnx(model, s, states={"stateN": "state"})["output"].reshape(-1)
    got = run_onnx(artifact, s, states={"stateN": "state"})["output"].reshape(-1)
    assert 0.2 < float((ref > 0.5).mean()) < 0.9             # the stream has speech and silence
    return float(((ref > 0.5) == (got > 0.5)).mean())


# The VAD bars below test --sequence (state carried through calibration and validation), not
# the INT8 engine: they were measured with the VNNI plan (full 8-bit weights) and MinMax ranges,
# so both are pinned, the plan through the target that declares VNNI. With 7-bit weights
# (x86-cpu) held-out agreement is 0.964, and 0.948 with the default engine passes: issue 16.
_TARGET = "x86-cpu-vnni"


def _vad_build(model: Path, work: Path, sequence: bool, **kw: object):  # type: ignore[no-untyped-def]
    from converters.api import BuildRequest
    from converters.build import build

    frames = _frames(PHRASES[:2])
    data = {"input": frames, "sr": np.full(len(frames), _RATE, np.int64)}
    if not sequence:
        data["state"] = np.zeros((len(frames), 2, 1, 128), np.float32)
    np.savez(work / "cal.npz", **data)
    req = BuildRequest(model=model, name="vad", version="1.0.0", targets=(_TARGET,),
                       calibration=work / "cal.npz", options={"sequence": sequence, "effort": "fast"},
                       **kw)  # type: ignore[arg-type]
    return build(req, lambda _m: None, work / "build").artifacts[0]


def test_vad_sequence_keeps_decisions_on_a_held_out_stream(tmp_path: Path) -> None:
    """The bar: the zoo VAD built to INT8 with --sequence agrees with FP32 on >= 98% of its
    speech/silence decisions over a held-out espeak-ng stream, each model free-running.

    The VAD's 16 kHz network, lifted out of the ``If`` on the sample rate (ORT's quantiser does
    not enter subgraphs: the shipped file alone builds to FP32, checked below). The gate reads
    the decisions (task ``vad``), but on the calibration stream's own validation split (200
    frames) it measures 90.5% agreement where the held-out stream keeps 99%: the default 1%
    budget stops the build with one line ("decision_agreement dropped 7.00% ... with 8
    node(s) in float"), so this bar is held at a 12% budget; quantisation quality is issue 16.
    """
    art = _vad_build(vad_16k(), tmp_path, sequence=True, max_accuracy_drop=0.12)
    assert art.precision == "int8" and art.details["quantised_nodes"] > 0
    assert art.metrics["accuracy"]["gate_metric"] == "decision_agreement"
    assert _agreement(vad_16k(), art.path, _frames(PHRASES[2:])) >= 0.98
    (tmp_path / "whole").mkdir()
    shipped = _vad_build(model_path("vad-ifless"), tmp_path / "whole", sequence=True)
    assert shipped.precision == "fp32" and "nothing to quantise" in shipped.details["reason"]


def test_vad_sequence_calibration_beats_independent_samples(tmp_path: Path) -> None:
    """On the VAD's 16 kHz network (out of its If, so INT8 really quantises it), carrying the
    state through calibration and validation agrees better with FP32 than zero states."""
    model = vad_16k()
    held_out = _frames(PHRASES[2:])
    kw = {"max_accuracy_drop": 0.5}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    seq = _vad_build(model, tmp_path / "a", sequence=True, **kw)
    indep = _vad_build(model, tmp_path / "b", sequence=False, **kw)
    assert seq.precision == indep.precision == "int8"
    assert any(r.startswith("sequence:") for r in seq.details["float_nodes"].values())
    a_seq, a_indep = _agreement(model, seq.path, held_out), _agreement(model, indep.path, held_out)
    assert a_seq > a_indep + 0.05, (a_seq, a_indep)


def test_prequantised_model_ships_as_is(cli, keys_home: Path, tmp_path: Path) -> None:
    """Was: KeyError: '140_scale' from inside ORT's quantiser."""
    model = prequantised()
    out = tmp_path / "out"
    line = _one_line(_build(cli, model, out), out)        # N, H, W dynamic: names the fix
    assert "--input-shape x=1x3xDxD" in line
    res = _build(cli, model, out, "--input-shape", "x=1x3x48x192")
    assert res.code == 0, res.err
    report = json.loads((out / "m-1.0.0.report.json").read_text())
    details = report["targets"]["x86-cpu"]["details"]
    assert details["pass"] == "prequantised" and details["quantised_ops"]["ConvInteger"] > 0
    assert report["targets"]["x86-cpu"]["precision"] == "int8"
    assert (out / "m-1.0.0.edgebundle").is_file()


@pytest.mark.parametrize(("target", "needle"), [
    ("cuda-gpu", "FP16 cannot be applied to integer weights"),
    ("tflite-cpu", "lowering a quantised ONNX graph to tflite is not supported")])
def test_prequantised_model_where_it_cannot_go(cli, keys_home: Path, tmp_path: Path,
                                               target: str, needle: str) -> None:
    out = tmp_path / "out"
    res = cli("build", prequantised(), "--name", "m", "--version", "1.0.0", "--out", out,
              "--target", target, *(("--precision", "fp16") if target == "cuda-gpu" else ()))
    line = _one_line(res, out)
    assert needle in line and "already quantised" in line


def test_quantiser_exception_is_one_line(cli, keys_home: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Any exception from deep inside a toolchain: one line naming model and step."""
    import converters.onnx_calibrate as oc

    def boom(*_a: object, **_k: object) -> None:
        raise KeyError("140_scale")

    monkeypatch.setattr(oc, "calibrate", boom)
    from tests.converters import zoo

    model = zoo.save(zoo.convnet(13), tmp_path / "model.onnx")
    out = tmp_path / "out"
    line = _one_line(_build(cli, model, out), out)
    assert "model.onnx: 'x86-cpu: calibrating" in line and "KeyError '140_scale'" in line


@pytest.mark.parametrize("form", ["whole", "stacked"])
def test_classifier_from_whole_or_batch_stacked_photos(cli, keys_home: Path, tmp_path: Path,
                                                       form: str) -> None:
    """The same photos as (N, 1, 3, 48, 192) whole inputs or (N, 3, 48, 192) batch-stacked."""
    from PIL import Image

    from tests.realdata import photos

    x = np.stack([np.asarray(Image.fromarray(p).resize((192, 48)), np.float32)
                  .transpose(2, 0, 1) / 127.5 - 1.0 for p in photos()])
    np.savez(tmp_path / "cal.npz", x=x[:, None] if form == "whole" else x)
    out = tmp_path / "out"
    res = _build(cli, model_path("ocr-cls"), out, "--calibration", tmp_path / "cal.npz",
                 "--precision", "fp32")
    assert res.code == 0, res.err
    report = json.loads((out / "m-1.0.0.report.json").read_text())
    assert report["data"]["calibration"]["samples"] == len(x)
