"""The suite's verdict rules, runtime decisions and settings, without a device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeops.bundle import ArtifactEntry, FileRef
from hardware_tests.checks import (
    DEFAULT_TOLERANCE,
    Tolerance,
    golden_verdict,
    latency_verdict,
    memory_verdict,
    percentiles_ms,
    resolve_figure,
    stability_verdict,
)
from hardware_tests.machine import parse_gpu_query, thermal_state
from hardware_tests.runtime import (
    HardwareMissing,
    ModelLoadError,
    ProviderFallbackError,
    load_model,
    require_active,
    require_available,
    require_isa,
)
from hardware_tests.settings import HardwareSettings, default_target
from hardware_tests.suite import Golden, load_golden, replay_golden
from tests.cpuinfo import ARM64, AVX2, AVX512_NO_VNNI, AVX512_VNNI, AVX_VNNI, VNNI_PLAN, cpu
from tests.hardware_tests.bundles import mlp_model

FLOATS = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
                    elements=st.floats(-100, 100, width=32))


# -- figures ---------------------------------------------------------------------------------

def test_resolve_figure_reads_flat_and_nested_names_and_ignores_non_numbers() -> None:
    assert resolve_figure({"latency_budget_ms": 5}, ["latency_budget_ms"]) == 5.0
    assert resolve_figure({"latency": {"p95_ms": 2.5}}, ["latency.p95_ms"]) == 2.5
    assert resolve_figure({"a": True, "b": float("nan"), "c": "3"}, ["a", "b", "c"]) is None
    assert resolve_figure({"b": 1, "a": 2}, ["a", "b"]) == 2.0      # first alias wins


# -- golden ----------------------------------------------------------------------------------

def test_tolerance_from_manifest_maps_known_keys_and_lists_unknown_ones() -> None:
    tol = Tolerance.from_manifest({"max_abs_error": 0.1, "cosine": 0.99, "weird": 1.0})
    assert (tol.atol, tol.rtol, tol.min_cosine, tol.stated) == (0.1, 0.0, 0.99, True)
    assert tol.ignored == ("weird",)
    default = Tolerance.from_manifest({})
    assert (default.atol, default.rtol, default.stated) == (DEFAULT_TOLERANCE.atol,
                                                            DEFAULT_TOLERANCE.rtol, False)
    assert "manifest has no tolerance" in default.describe()


@settings(max_examples=50, deadline=None)
@given(ref=FLOATS, frac=st.floats(0.0, 0.9))
def test_golden_within_tolerance_passes(ref: np.ndarray, frac: float) -> None:
    tol = Tolerance(atol=1e-2, rtol=1e-3)
    got = (ref.astype(np.float64) + frac * tol.atol).astype(np.float64)
    assert golden_verdict({"y": ref}, {"y": got}, tol).ok


@settings(max_examples=50, deadline=None)
@given(ref=FLOATS, extra=st.floats(1.5, 10.0))
def test_golden_beyond_tolerance_fails(ref: np.ndarray, extra: float) -> None:
    tol = Tolerance(atol=1e-2, rtol=1e-3)
    ref64 = ref.astype(np.float64)
    got = ref64.copy()
    flat = got.reshape(-1)
    flat[0] += extra * (tol.atol + tol.rtol * abs(ref64.reshape(-1)[0]))
    verdict = golden_verdict({"y": ref64}, {"y": got}, tol)
    assert not verdict.ok
    assert "output 'y' differs from golden" in verdict.message


@pytest.mark.parametrize(("got", "words"), [
    ({}, "output 'y' was not produced"),
    ({"y": np.zeros((2, 2))}, "has shape [2, 2], golden [2, 3]"),
    ({"y": np.full((2, 3), np.nan)}, "differs from golden"),
])
def test_golden_shape_missing_and_nan_fail(got: dict[str, np.ndarray], words: str) -> None:
    verdict = golden_verdict({"y": np.zeros((2, 3))}, got, DEFAULT_TOLERANCE)
    assert not verdict.ok and words in verdict.message


def test_golden_cosine_and_top1_bounds() -> None:
    ref = np.array([[0.1, 0.9], [0.8, 0.2]])
    flipped = np.array([[0.9, 0.1], [0.8, 0.2]])
    tol = Tolerance(atol=1.0, rtol=0.0, min_cosine=0.99, min_top1_agreement=1.0)
    verdict = golden_verdict({"p": ref}, {"p": flipped}, tol)
    assert not verdict.ok
    assert "cosine" in verdict.message and "top-1 agreement 0.500" in verdict.message


def test_golden_file_parsing_rejects_bad_files() -> None:
    import io

    with pytest.raises(Exception, match="not a readable .npz"):
        load_golden(b"junk", "artifacts/x/golden.npz")
    buf = io.BytesIO()
    np.savez(buf, **{"input/x": np.zeros((1, 2))})
    with pytest.raises(Exception, match="holds no golden samples"):
        load_golden(buf.getvalue(), "g.npz")
    with pytest.raises(Exception, match="over the 3 limit"):
        load_golden(buf.getvalue(), "g.npz", max_bytes=3)


def test_replay_golden_feeds_batches_of_one_and_stacks() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    seen: list[tuple[int, ...]] = []

    def run(feeds: object) -> dict[str, np.ndarray]:
        assert isinstance(feeds, dict)
        seen.append(feeds["x"].shape)
        return {"y": feeds["x"].sum(axis=1, keepdims=True)}

    out = replay_golden(run, Golden({"x": x}, {}))
    assert seen == [(1, 4)] * 3
    np.testing.assert_array_equal(out["y"], x.sum(axis=1, keepdims=True))


# -- latency, memory, stability --------------------------------------------------------------

def test_percentiles() -> None:
    p50, p95 = percentiles_ms([i / 1000 for i in range(1, 101)])
    assert p50 == pytest.approx(np.percentile(np.arange(1, 101), 50))
    assert p95 == pytest.approx(np.percentile(np.arange(1, 101), 95))
    with pytest.raises(ValueError, match="no latency samples"):
        percentiles_ms([])


def test_latency_without_figures_is_not_applicable() -> None:
    v = latency_verdict(1.0, 2.0, {"size_bytes": 10}, 1.5)
    assert not v.applicable and v.message.startswith("no budget in manifest")


@pytest.mark.parametrize(("metrics", "ok", "words"), [
    ({"latency_budget_ms": 2.0}, True, "within"),
    ({"latency_budget_ms": 1.0}, False, "p95 2.000 ms > budget 1.000 ms × 1.5"),
    ({"latency": {"p50_ms": 0.5, "p95_ms": 10}}, False, "p50 1.000 ms > manifest 0.500 ms"),
    ({"latency_ms_p50": 1.0, "latency_ms_p95": 1.5}, True, "within"),
])
def test_latency_against_figures_with_margin(metrics: dict[str, object], ok: bool,
                                             words: str) -> None:
    v = latency_verdict(1.0, 2.0, metrics, 1.5)
    assert v.applicable and v.ok is ok and words in v.message


def test_latency_slack_is_added_to_every_figure_and_stated() -> None:
    metrics = {"latency_budget_ms": 0.02, "latency_ms_p50": 0.01}
    assert not latency_verdict(0.05, 0.08, metrics, 1.5).ok
    v = latency_verdict(0.05, 0.08, metrics, 1.5, slack_ms=0.1)
    assert v.ok and "× 1.5 + 0.1 ms" in v.message and v.figures["slack_ms"] == 0.1


def test_memory_figures_in_mib_and_mb() -> None:
    assert not memory_verdict(5.0, {}, 1.5).applicable
    assert memory_verdict(14.0, {"peak_memory_mib": 10}, 1.5).ok
    assert not memory_verdict(16.0, {"peak_memory_mib": 10}, 1.5).ok
    mb = memory_verdict(1.0, {"peak_memory_mb": 10}, 1.0)
    assert mb.figures["manifest_mib"] == pytest.approx(10e6 / 2**20, abs=1e-3)


@pytest.mark.parametrize(("drift", "growth", "ok", "words"), [
    (0.0, 1.0, True, "no output drift"),
    (1e-3, 0.0, False, "outputs drifted by 0.001"),
    (float("nan"), 0.0, False, "outputs drifted"),
    (0.0, 20.0, False, "RSS grew 20.0 MiB"),
])
def test_stability(drift: float, growth: float, ok: bool, words: str) -> None:
    v = stability_verdict(drift, growth, 100, 0.0, 16.0)
    assert v.ok is ok and words in v.message


# -- runtime decisions -------------------------------------------------------------------------

def test_absent_provider_is_hardware_missing_naming_it() -> None:
    with pytest.raises(HardwareMissing, match="CUDAExecutionProvider is not available"):
        require_available("CUDAExecutionProvider", ["CPUExecutionProvider"], "onnxruntime")
    require_available("CPUExecutionProvider", ["CPUExecutionProvider"], "onnxruntime")


def test_silent_fallback_fails_loudly() -> None:
    with pytest.raises(ProviderFallbackError, match="silently fell back"):
        require_active("CUDAExecutionProvider", ["CPUExecutionProvider"])
    require_active("CUDAExecutionProvider", ["CUDAExecutionProvider", "CPUExecutionProvider"])


def _entry(runtime: str, providers: tuple[str, ...], fmt: str = "onnx") -> ArtifactEntry:
    return ArtifactEntry(target="t", file=FileRef("artifacts/t/model", "0" * 64, 1), format=fmt,
                         runtime=runtime, providers=providers, precision="fp32")


def test_runtime_rejects_garbage_model(tmp_path: Path) -> None:
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelLoadError, match="ONNX Runtime cannot load"):
        load_model(junk, _entry("onnxruntime", ("CPUExecutionProvider",)), ["y"])
    with pytest.raises(ModelLoadError, match="LiteRT cannot load"):
        load_model(junk, _entry("litert", ("XNNPACK",), "tflite"), ["y"])
    with pytest.raises(ModelLoadError, match="runtime 'tvm'"):
        load_model(junk, _entry("tvm", ()), ["y"])


# LiteRT's Delegate.__del__ touches an attribute its failed __init__ never set (ai-edge-litert
# 2.3); that noise is LiteRT's, the behaviour under test is the HardwareMissing below.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_absent_npu_delegate_is_hardware_missing(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEOPS_EDGETPU_LIB", str(tmp_path / "libedgetpu-absent.so.1"))
    with pytest.raises(HardwareMissing, match="EdgeTPUDelegate delegate .*libedgetpu-absent"):
        load_model(tmp_path / "m.tflite", _entry("litert", ("EdgeTPUDelegate", "XNNPACK"),
                                                 "tflite"), ["y"])


def _cpu_entry(target: str, plan: dict[str, object]) -> ArtifactEntry:
    return ArtifactEntry(target=target, file=FileRef("artifacts/t/model.onnx", "0" * 64, 1),
                         format="onnx", runtime="onnxruntime",
                         providers=("CPUExecutionProvider",), precision="int8",
                         details={"plan": plan})


@pytest.mark.parametrize("cpuinfo", [AVX2, AVX512_NO_VNNI], ids=["avx2", "avx512-no-vnni"])
def test_vnni_artifact_on_a_cpu_without_vnni_is_hardware_missing(tmp_path: Path,
                                                                 cpuinfo: str) -> None:
    vnni = _cpu_entry("x86-cpu-vnni", VNNI_PLAN)
    with pytest.raises(HardwareMissing) as missing:
        load_model(mlp_model(tmp_path / "m.onnx"), vnni, ["y"], cpu=cpu(cpuinfo))
    assert str(missing.value) == (
        "the x86-cpu-vnni int8 artifact has 8-bit weights that need VNNI, and this x86_64 CPU "
        "has neither avx512_vnni nor avx_vnni: ONNX Runtime would saturate them and give wrong "
        "outputs without an error; bless it on a unit with AVX-512 VNNI or AVX-VNNI (or test "
        "the x86-cpu artifact here)")


@pytest.mark.parametrize("cpuinfo", [AVX512_VNNI, AVX_VNNI, ARM64],
                         ids=["avx512_vnni", "avx_vnni", "arm64"])
def test_vnni_artifact_loads_where_its_weights_are_exact(tmp_path: Path, cpuinfo: str) -> None:
    model = load_model(mlp_model(tmp_path / "m.onnx"), _cpu_entry("x86-cpu-vnni", VNNI_PLAN),
                       ["y"], cpu=cpu(cpuinfo))
    assert model.active_providers[0] == "CPUExecutionProvider"


def test_seven_bit_x86_artifact_is_never_refused() -> None:
    plan = {**VNNI_PLAN, "reduce_range": True, "target_isa": "x86_64"}
    for cpuinfo in (AVX2, AVX512_NO_VNNI, AVX512_VNNI, ARM64):
        require_isa(_cpu_entry("x86-cpu", plan), cpu(cpuinfo))


# -- settings and machine ---------------------------------------------------------------------

@pytest.mark.parametrize(("machine", "providers", "targets", "expected"), [
    ("x86_64", ["CPUExecutionProvider"], ["x86-cpu"], "x86-cpu"),
    ("aarch64", ["CPUExecutionProvider"], ["arm64-cpu"], "arm64-cpu"),
    ("x86_64", ["CUDAExecutionProvider"], ["x86-cpu", "cuda-gpu"], "cuda-gpu"),
    ("x86_64", ["CUDAExecutionProvider"], ["x86-cpu"], "x86-cpu"),
    ("riscv64", ["CPUExecutionProvider"], ["x86-cpu"], None),
])
def test_default_target(machine: str, providers: list[str], targets: list[str],
                        expected: str | None) -> None:
    assert default_target(machine, providers, targets) == expected


@pytest.mark.parametrize("kwargs", [{"latency_margin_ratio": 0.9}, {"latency_runs": 0},
                                    {"max_rss_growth_mib": -1}, {"threads": 0},
                                    {"latency_slack_ms": -0.1}])
def test_settings_reject_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must|ratios"):
        HardwareSettings(**kwargs)  # type: ignore[arg-type]


def test_thermal_state_reads_sysfs_zones(tmp_path: Path) -> None:
    zone = tmp_path / "thermal_zone0"
    zone.mkdir()
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("61500\n")
    broken = tmp_path / "thermal_zone1"
    broken.mkdir()
    (broken / "temp").write_text("n/a\n")
    state = thermal_state(tmp_path)
    assert state["temperatures_c"]["thermal_zone0:cpu-thermal"] == 61.5
    assert not any(k.startswith("thermal_zone1") for k in state["temperatures_c"])
    assert 0.0 <= state["cpu_percent"] <= 100.0 * 1024


def test_gpu_query_parsed_per_gpu_and_unreadable_fields_left_out() -> None:
    text = ("NVIDIA H100 80GB HBM3, 580.159.04, 34, 1980, 1980, 71.52, 512, 81559, 3\n"
            "NVIDIA T4, 535.1, [N/A], 300, 1590, [Not Supported], 0, 15360, 0\n"
            "garbage line\n")
    first, second = parse_gpu_query(text)
    assert first == {"name": "NVIDIA H100 80GB HBM3", "driver_version": "580.159.04",
                     "temperature.gpu": 34.0, "clocks.sm": 1980.0, "clocks.max.sm": 1980.0,
                     "power.draw": 71.52, "memory.used": 512.0, "memory.total": 81559.0,
                     "utilization.gpu": 3.0}
    assert "temperature.gpu" not in second and "power.draw" not in second
    assert second["clocks.sm"] == 300.0
    assert parse_gpu_query("") == []


def test_rss_tracker_sees_a_peak_that_no_sample_caught() -> None:
    import subprocess
    import sys

    # A fresh process, so the kernel's high-water mark starts near the current RSS.
    code = ("import numpy as np\n"
            "from hardware_tests.suite import RssTracker\n"
            "t = RssTracker()\n"
            "a = np.ones(200 * 2**20 // 8)\n"
            "del a\n"
            "t.sample()\n"
            "print(round(t.peak_growth_mib, 1), round((t.peak - t.baseline) / 2**20, 1))\n")
    # Started by a parent that has already peaked at 300 MiB, as the suite is when a large
    # pytest run or an agent launches it: the child must see its own peak, not the parent's.
    launcher = ("import subprocess, sys, numpy as np\n"
                "big = np.ones(300 * 2**20 // 8)\n"
                "sys.exit(subprocess.call([sys.executable, '-c', sys.argv[1]]))\n")
    out = subprocess.run([sys.executable, "-c", launcher, code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    growth, sampled = float(out[0]), float(out[1])
    assert growth >= 190.0
    assert sampled < growth                  # the samples alone missed it


@settings(max_examples=30, deadline=None)
@given(x=hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 6)),
                    elements=st.floats(-1e3, 1e3, width=32)),
       y=hnp.arrays(np.int64, st.tuples(st.integers(1, 4)), elements=st.integers(-9, 9)))
def test_golden_written_by_the_converters_reads_back(x: np.ndarray, y: np.ndarray) -> None:
    import tempfile

    from converters.validate import write_golden

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "golden.npz"
        write_golden(path, {"features": x}, {"label": y})
        golden = load_golden(path.read_bytes(), "golden.npz")
    np.testing.assert_array_equal(golden.inputs["features"], x)
    np.testing.assert_array_equal(golden.outputs["label"], y)
    assert len(golden) == x.shape[0]
    np.testing.assert_array_equal(golden.sample(0)["features"], x[:1])
