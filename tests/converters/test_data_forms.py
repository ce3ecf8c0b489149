"""Data in any reasonable form: whole inputs or batch-stacked, batch axes, scalars, states, feeds.

A tiny streaming model stands in for a voice-activity detector: ``x`` (batch, 4), a recurrent
``h`` whose batch axis is 1 (2, batch, 3), a scalar int64 ``sr``; outputs ``y`` (batch, 1) and
``hN``, the next ``h``. Real zoo models are in test_real_intake.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from converters.data import DataError, InputSpec, SampleSet, load_samples, validate_samples
from converters.feeds import SPOOL_CHUNK, SpooledSamples, spool
from converters.io_layout import TensorDecl, batch_axes, recurrent_nodes, state_pairs
from converters.validate import model_inputs, run_onnx, synthetic_samples
from edgeops.errors import UsageError
from tests.converters.conftest import listing


def _stateful(state_name: str = "h", out_name: str = "hN") -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], rng.standard_normal(12).tolist())
    nodes = [
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["srf", "k16"], ["scale"]),
        helper.make_node("Mul", ["x", "scale"], ["xs"]),
        helper.make_node("MatMul", ["xs", "w"], ["xw"]),
        helper.make_node("Unsqueeze", ["xw", "ax0"], ["xw0"]),
        helper.make_node("Mul", [state_name, "half"], ["hh"]),
        helper.make_node("Add", ["hh", "xw0"], ["pre"]),
        helper.make_node("Tanh", ["pre"], [out_name]),
        helper.make_node("ReduceMean", [out_name], ["m"], axes=[0, 2], keepdims=1),
        helper.make_node("Squeeze", ["m", "ax0"], ["ms"]),
        helper.make_node("Sigmoid", ["ms"], ["y"]),
    ]
    inits = [w, helper.make_tensor("k16", TensorProto.FLOAT, [], [16000.0]),
             helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
             helper.make_tensor("ax0", TensorProto.INT64, [1], [0])]
    g = helper.make_graph(
        nodes, "stream",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info(state_name, TensorProto.FLOAT, [2, "batch", 3]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [2, "batch", 3])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.fixture
def stream_model(tmp_path: Path) -> Path:
    p = tmp_path / "stream.onnx"
    onnx.save_model(_stateful(), str(p))
    return p


def _specs() -> list[InputSpec]:
    return model_inputs(_stateful())


# -- batch axes and state pairs, from the graph ------------------------------------------------

def test_batch_axis_per_input_from_dim_names_and_shapes() -> None:
    specs = {s.name: s for s in _specs()}
    assert (specs["x"].batch_axis, specs["h"].batch_axis, specs["sr"].batch_axis) == (0, 1, None)
    decls = [TensorDecl("a", 1, (None, None)), TensorDecl("s", 1, (2, None, 128)),
             TensorDecl("img", 1, (1, 3, 8, 8)), TensorDecl("fixed", 1, (3, 8)),
             TensorDecl("seqfirst", 1, ("T", "N", 16)), TensorDecl("unknown", 1, None)]
    assert batch_axes(decls) == {"a": 0, "s": 1, "img": 0, "fixed": None, "seqfirst": 1,
                                 "unknown": 0}
    assert batch_axes(decls, {"s": None, "fixed": 1})["fixed"] == 1


@pytest.mark.parametrize(("override", "needle"), [
    ({"h": 3}, "outside the input's rank 3"), ({"nope": 0}, "unknown inputs ['nope']")])
def test_bad_batch_axis_override(override: dict[str, int], needle: str) -> None:
    with pytest.raises(UsageError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        model_inputs(_stateful(), None, override)


@pytest.mark.parametrize(("state", "out", "paired"), [
    ("h", "hN", True), ("h_in", "h_out", True), ("past_state", "present_state", True),
    ("state", "state_next", True), ("h", "g", False)])
def test_state_pairs_by_name_and_shape(state: str, out: str, paired: bool) -> None:
    m = _stateful(state, out)
    from converters.validate import tensor_decls

    inits = {i.name for i in m.graph.initializer}
    got = state_pairs([d for d in tensor_decls(m.graph.input) if d.name not in inits],
                      tensor_decls(m.graph.output))
    assert got == ({out: state} if paired else {})


def test_state_pair_needs_matching_shape() -> None:
    ins = [TensorDecl("h", 1, (2, None, 3))]
    assert state_pairs(ins, [TensorDecl("hN", 1, (2, None, 4))]) == {}
    assert state_pairs(ins, [TensorDecl("hN", 7, (2, None, 3))]) == {}


def test_recurrent_nodes_are_the_state_path() -> None:
    m = _stateful()
    nodes = [(n.output[0], list(n.input), list(n.output)) for n in m.graph.node]
    assert recurrent_nodes(nodes, {"hN": "h"}) == {"hh", "pre", "hN"}
    assert recurrent_nodes(nodes, {}) == set()


# -- the two data forms ------------------------------------------------------------------------

def test_whole_inputs_per_sample_feed_each_input_its_real_shape() -> None:
    n = 5
    s = validate_samples({"x": np.ones((n, 1, 4), np.float32),
                          "h": np.zeros((n, 2, 1, 3), np.float32),
                          "sr": np.full(n, 16000, np.int64)}, _specs())
    assert len(s) == n
    assert {k: v.shape for k, v in s.arrays.items()} == {"x": (n, 4), "h": (n, 2, 3), "sr": (n,)}
    feed = s.sample(2)
    assert {k: v.shape for k, v in feed.items()} == {"x": (1, 4), "h": (2, 1, 3), "sr": ()}


def test_batch_stacked_only_where_the_batch_axis_is_first() -> None:
    n = 3
    s = validate_samples({"x": np.ones((n, 4), np.float32), "h": np.zeros((n, 2, 1, 3),
                          np.float32), "sr": np.full(n, 8000, np.int64)}, _specs())
    assert s.sample(0)["x"].shape == (1, 4)
    with pytest.raises(DataError, match=r"input 'h' has shape \(3, 2, 3\).*batch axis 1\): give "
                                        r"whole inputs \(N, 2x\?x3\)$"):
        validate_samples({"x": np.ones((n, 4), np.float32), "h": np.zeros((n, 2, 3), np.float32),
                          "sr": np.full(n, 8000, np.int64)}, _specs())


def test_whole_samples_with_a_batch_are_split_and_scalars_repeated() -> None:
    s = validate_samples({"x": np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4),
                          "h": np.zeros((2, 2, 3, 3), np.float32),
                          "sr": np.array([16000, 8000])}, _specs())
    assert len(s) == 6
    assert s.arrays["sr"].tolist() == [16000] * 3 + [8000] * 3
    np.testing.assert_array_equal(s.sample(4)["x"], [[16, 17, 18, 19]])


def test_input_of_unknown_rank_is_ambiguous_and_shows_both_readings() -> None:
    spec = InputSpec("t", np.dtype(np.float32), (), batch_axis=0, rank_known=False)
    with pytest.raises(DataError) as exc:
        validate_samples({"t": np.zeros((8, 3, 5), np.float32)}, [spec])
    msg = exc.value.message
    assert "whole inputs (8 samples of 3x5)" in msg
    assert "batch-stacked (8 samples of 1x3x5)" in msg
    assert "--input-shape t=" in exc.value.hint


def test_npy_directory_in_whole_form(tmp_path: Path) -> None:
    d = tmp_path / "cal"
    d.mkdir()
    np.save(d / "x.npy", np.ones((4, 1, 4), np.float32))
    np.save(d / "sr.npy", np.full(4, 16000, np.int64))
    s = load_samples(d, _specs(), zeros=["h"])           # a sequence's state starts at zero
    assert s.arrays["h"].shape == (4, 2, 3) and not s.arrays["h"].any()


def test_integer_data_cast_only_where_values_survive() -> None:
    spec = [InputSpec("sr", np.dtype(np.int64), (), None)]
    assert validate_samples({"sr": np.array([16000], np.int32)}, spec).arrays["sr"].dtype \
        == np.int64
    with pytest.raises(DataError, match="dtype float64, the model expects int64"):
        validate_samples({"sr": np.array([1.5])}, spec)


def test_missing_scalar_filled_by_input_value_and_dtype_kept() -> None:
    s = validate_samples({"x": np.ones((2, 1, 4), np.float32), "h": np.zeros((2, 2, 1, 3),
                          np.float32)}, _specs(), values={"sr": 16000})
    assert s.arrays["sr"].dtype == np.int64 and s.sample(0)["sr"].tolist() == 16000


def test_synthetic_data_respects_shapes_and_refuses_to_guess_a_scalar() -> None:
    with pytest.raises(UsageError, match="int64 scalar") as exc:
        synthetic_samples(_specs(), 4)
    assert "--input-value sr=" in exc.value.hint
    s = synthetic_samples(_specs(), 4, values={"sr": 16000})
    feed = s.sample(0)
    assert {k: (v.shape, v.dtype.name) for k, v in feed.items()} == {
        "x": ((1, 4), "float32"), "h": ((2, 1, 3), "float32"), "sr": ((), "int64")}


# -- Python feeds, streamed --------------------------------------------------------------------

def _feeds(n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal((1, 4)).astype(np.float32),
             "h": np.zeros((2, 1, 3), np.float32), "sr": np.array(16000)} for _ in range(n)]


class _Reader:
    """What ORT's CalibrationDataReader subclasses look like."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


@pytest.mark.parametrize("kind", ["generator", "callable", "reader"])
def test_feed_sources_are_read_once_and_spooled_in_chunks(kind: str, tmp_path: Path) -> None:
    feeds = _feeds(SPOOL_CHUNK * 2 + 5)
    pulled = []

    def gen():  # type: ignore[no-untyped-def]
        for f in feeds:
            pulled.append(1)
            yield f

    source = {"generator": gen(), "callable": gen, "reader": _Reader(feeds)}[kind]
    s = spool(source, _specs(), what="calibration", workdir=tmp_path)
    assert isinstance(s, SpooledSamples) and len(s) == len(feeds)
    assert len(list(s.directory.iterdir())) == 3          # chunks on disk, not in memory
    if kind != "reader":
        assert len(pulled) == len(feeds)                  # one pass over the source
    for i, got in enumerate(s.iter_samples()):
        np.testing.assert_array_equal(got["x"], feeds[i]["x"])
        assert s._cache is not None and len(s._cache[1]) <= SPOOL_CHUNK
    assert s.head(3).arrays["h"].shape == (3, 2, 3)
    s.close()
    assert listing(tmp_path) == []


def test_bad_feed_is_named(tmp_path: Path) -> None:
    feeds = _feeds(4)
    feeds[2] = {**feeds[2], "x": np.zeros((1, 5), np.float32)}
    with pytest.raises(DataError, match=r"^calibration feed 2: calibration input 'x' has shape"):
        spool(feeds, _specs(), what="calibration", workdir=tmp_path)
    assert listing(tmp_path) == []                        # the scratch chunks are gone


def test_run_in_sequence_carries_each_state(stream_model: Path) -> None:
    import onnxruntime as ort

    s = validate_samples({"x": np.random.default_rng(1).standard_normal((6, 1, 4))
                          .astype(np.float32), "sr": np.full(6, 16000)}, _specs(), zeros=["h"])
    got = run_onnx(stream_model, s, states={"hN": "h"})
    sess = ort.InferenceSession(str(stream_model))
    h = np.zeros((2, 1, 3), np.float32)
    for i in range(6):
        y, h = sess.run(["y", "hN"], {**s.sample(i), "h": h})
        np.testing.assert_allclose(got["y"][i], y[0], rtol=1e-6)
    independent = run_onnx(stream_model, s)
    assert not np.allclose(independent["y"][1:], got["y"][1:])


# -- through `edgeops build` -------------------------------------------------------------------

def _build(cli, model: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return cli("build", model, "--name", "m", "--version", "1.0.0", "--out", out,
               "--target", "x86-cpu", "--precision", "fp32", *extra)


def _manifest(bundle: Path) -> dict:  # type: ignore[type-arg]
    from edgeops.bundle import read_bundle

    return json.loads(read_bundle(bundle).manifest_bytes)


def test_cli_streaming_model_from_whole_inputs(cli, keys_home: Path, stream_model: Path,
                                               tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((12, 1, 4)).astype(np.float32))
    out = tmp_path / "out"
    res = _build(cli, stream_model, out, "--calibration", tmp_path / "cal.npz",
                 "--input-value", "sr=16000")
    assert res.code == 0, res.err
    assert "sequence mode (auto" in res.err and "hN -> h" in res.err
    bundle = Path(res.out.strip())
    sig = {t["name"]: t for t in _manifest(bundle)["signature"]["inputs"]}
    assert sig["h"]["batch_axis"] == 1 and sig["h"]["state_from"] == "hN"
    assert sig["sr"]["batch_axis"] is None and "batch_axis" not in sig["x"]
    report = json.loads((out / "m-1.0.0.report.json").read_text())
    assert report["data"]["sequence"] == {"states": {"hN": "h"}, "found": "auto"}
    from edgeops.bundle import read_bundle

    b = read_bundle(bundle)
    entry = b.manifest.artifacts[0]
    assert entry.golden is not None
    artifact = b.extract_file(entry.file.path, tmp_path / "artifact.onnx")
    _device_replays_in_order(artifact, b.read_file(entry.golden.path), bundle)


def _device_replays_in_order(artifact: Path, golden: bytes, bundle: Path) -> None:
    """The agent's health check feeds h as (2, 1, 3), sr as a scalar, and carries hN -> h."""
    from dataclasses import replace

    from device_agent.health import check_health, load_golden
    from edgeops.bundle import read_bundle
    from edgeops.runtime import load_runner

    manifest = read_bundle(bundle).manifest
    entry = manifest.artifacts[0]
    ins, _ = load_golden(golden)
    assert ins["h"].shape[1:] == (2, 3) and ins["sr"].shape == (ins["x"].shape[0],)
    runner = load_runner(artifact, runtime="onnxruntime", providers=("CPUExecutionProvider",))
    fed: list[dict[str, np.ndarray]] = []
    real_run = runner.run

    def spy(feed):  # type: ignore[no-untyped-def]
        fed.append(feed)
        return real_run(feed)

    runner.run = spy  # type: ignore[method-assign]
    try:
        res = check_health(runner, replace(entry, metrics={}), golden,
                           signature=manifest.inputs)
    finally:
        runner.close()
    assert res.ok, res.reason
    assert fed[0]["h"].shape == (2, 1, 3) and fed[0]["sr"].shape == ()
    assert not np.array_equal(fed[1]["h"], fed[0]["h"])   # carried from step 0's hN


def test_cli_no_sequence_needs_the_state_in_the_data(cli, keys_home: Path, stream_model: Path,
                                                     tmp_path: Path) -> None:
    np.savez(tmp_path / "cal.npz", x=np.ones((4, 1, 4), np.float32))
    out = tmp_path / "out"
    res = _build(cli, stream_model, out, "--calibration", tmp_path / "cal.npz",
                 "--input-value", "sr=16000", "--no-sequence")
    assert res.code == 1 and "missing ['h']" in res.err and listing(out) == []


@pytest.mark.parametrize(("args", "needle"), [
    (("--sequence", "--state", "y=x", "--input-value", "sr=16000"), None),
    (("--state", "hN=nope"), "--state hN=nope: the model has no input 'nope'"),
    (("--batch-axis", "h=x"), "--batch-axis 'h=x' is not NAME=AXIS"),
    (("--input-value", "sr=fast"), "--input-value 'sr=fast' is not NAME=NUMBER"),
    (("--input-value", "nope=1"), "--input-value names unknown inputs ['nope']"),
    ((), "input 'sr' is a int64 scalar"),
])
def test_cli_refusals_are_one_line(cli, keys_home: Path, stream_model: Path, tmp_path: Path,
                                   args: tuple[str, ...], needle: str | None) -> None:
    out = tmp_path / "out"
    res = _build(cli, stream_model, out, *args)
    lines = [ln for ln in res.err.splitlines() if ln.startswith("error:")]
    assert res.code != 0 and len(lines) == 1 and "Traceback" not in res.err, res.err
    # --state y=x: y (batch, 1) fed into x (batch, 4): ORT's refusal, as one line naming 'x'
    assert (needle or "fed input 'x' a wrong shape") in lines[0]
    assert listing(out) == []


def test_python_api_takes_feed_dicts(stream_model: Path, tmp_path: Path) -> None:
    from converters.api import BuildRequest
    from converters.build import build

    feeds = _feeds(20)
    req = BuildRequest(model=stream_model, name="m", version="1.0.0", targets=("x86-cpu",),
                       precision="fp32", calibration=lambda: iter(feeds),
                       validation=iter(feeds[:8]))
    outcome = build(req, lambda _m: None, tmp_path / "w")
    assert outcome.data["calibration"]["samples"] == 20
    assert outcome.data["validation"]["source"].startswith("python feeds")
    assert outcome.artifacts[0].metrics["validation_samples"] == 8


def test_samples_layout_round_trip() -> None:
    s = SampleSet({"h": np.arange(12, dtype=np.float32).reshape(2, 2, 3)}, {"h": 1})
    assert s.sample(1)["h"].shape == (2, 1, 3)
    assert s.head(1).batch_axes == {"h": 1}


def test_hardware_suite_replays_a_sequence_in_order(stream_model: Path) -> None:
    import onnxruntime as ort

    from edgeops.bundle import TensorSpec
    from hardware_tests.suite import Golden, replay_golden

    sess = ort.InferenceSession(str(stream_model))
    n = 3
    ins = {"x": np.ones((n, 4), np.float32), "h": np.zeros((n, 2, 3), np.float32),
           "sr": np.full(n, 16000, np.int64)}
    sig = (TensorSpec("x", "float32", ("batch", 4)),
           TensorSpec("h", "float32", (2, "batch", 3), batch_axis=1, state_from="hN"),
           TensorSpec("sr", "int64", (), batch_axis=None))
    fed: list[dict[str, np.ndarray]] = []

    def run(feed):  # type: ignore[no-untyped-def]
        fed.append(dict(feed))
        return dict(zip(["y", "hN"], sess.run(["y", "hN"], dict(feed)), strict=True))

    out = replay_golden(run, Golden(ins, {}, sig))
    assert [f["h"].shape for f in fed] == [(2, 1, 3)] * n and fed[0]["sr"].shape == ()
    np.testing.assert_array_equal(fed[1]["h"], out["hN"][0])  # step 1 got step 0's state


def _raise_in_library(src: str, **env: object) -> BaseException:
    """An exception raised from code whose file is a library's (not converters/ or edgeops/)."""
    code = compile(src, "/site-packages/onnxruntime/quantization/qdq_quantizer.py", "exec")
    try:
        exec(code, dict(env))  # noqa: S102 - code whose frames a library would own
    except Exception as exc:
        return exc
    raise AssertionError("did not raise")


def test_library_failure_names_the_node_it_was_on() -> None:
    """Was: 'failed in qdq_quantizer.py:_adjust_weight_scale_for_int32_bias: The truth value
    of an array ...' with no node: the line now names the node the quantiser was working on."""
    import onnx

    from converters.failures import explain

    node = onnx.helper.make_node("MatMul", ["a", "w"], ["y"], name="Dense_1/MatMul")
    exc = _raise_in_library("def adjust(node):\n    raise ValueError('ambiguous')\nadjust(node)",
                            node=node)
    line = str(explain(exc, "/m/model.onnx", "x86-cpu: quantising"))
    assert line.startswith("model.onnx: x86-cpu: quantising failed in qdq_quantizer.py:adjust")
    assert "at MatMul node 'Dense_1/MatMul': ambiguous" in line

    class BiasInfo:
        node_name = "Conv_0"

    exc = _raise_in_library("def f(info):\n    raise ValueError('bad bias')\nf(info)",
                            info=BiasInfo())
    assert "at node 'Conv_0': bad bias" in str(explain(exc, "m.onnx", "s"))
    exc = _raise_in_library("raise KeyError('140_scale')")
    line = str(explain(exc, "m.onnx", "s"))
    assert " node " not in line and "KeyError '140_scale'" in line       # none to name
