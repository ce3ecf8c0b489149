"""A model that arrives quantised: what its weights need from an x86 CPU is read from the graph
and recorded, so the device guard (edgeops/cpu.py) refuses 8-bit u8s8 weights on CPUs without
VNNI (converters/int8_weights, converters/prequantised.shipped_plan).

The graphs are what ONNX Runtime's own quantisers write for a tiny dense model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

from converters.int8_weights import SATURATION_FREE_PEAK, U8S8Weights, u8s8_weights
from converters.prequantised import shipped_plan
from edgeops.bundle import read_bundle
from edgeops.cpu import CpuFacts, isa_shortfall
from edgeops.targets import PROFILES
from tests.converters import zoo
from tests.cpuinfo import AVX2, AVX512_VNNI

_X = np.random.default_rng(5).standard_normal((4, 16)).astype(np.float32)


def _dense(tmp_path: Path) -> Path:
    return zoo.save(zoo.dense_biases((12,), batch=1), tmp_path / "dense.onnx")


def _dynamic(tmp_path: Path, weight_type: QuantType, reduce_range: bool = False) -> Path:
    out = tmp_path / f"dyn-{weight_type.name}-{reduce_range}.onnx"
    quantize_dynamic(str(_dense(tmp_path)), str(out), weight_type=weight_type,
                     reduce_range=reduce_range)
    return out


def _static(tmp_path: Path, activation_type: QuantType) -> Path:
    out = tmp_path / f"qdq-{activation_type.name}.onnx"
    feeds = iter([{"x": _X[i:i + 1]} for i in range(len(_X))])

    class Reader:
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    quantize_static(str(_dense(tmp_path)), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=activation_type, weight_type=QuantType.QInt8)
    return out


def test_dynamic_int8_weights_against_uint8_activations_need_vnni(tmp_path: Path) -> None:
    m = onnx.load(str(_dynamic(tmp_path, QuantType.QInt8)))
    assert {n.op_type for n in m.graph.node} >= {"DynamicQuantizeLinear", "MatMulInteger"}
    w = u8s8_weights(m)
    assert w.peak == 127 and w.needs_vnni
    assert w.nodes == ("dense1_quant", "dense2_quant")              # ORT names its MatMulIntegers


@pytest.mark.parametrize(("weight_type", "reduce_range", "peak"), [
    (QuantType.QInt8, True, SATURATION_FREE_PEAK),     # 7-bit weights: exact everywhere
    (QuantType.QUInt8, False, 0)])                       # u8u8 kernels: nothing to saturate
def test_weights_every_x86_cpu_computes(tmp_path: Path, weight_type: QuantType,
                                        reduce_range: bool, peak: int) -> None:
    w = u8s8_weights(onnx.load(str(_dynamic(tmp_path, weight_type, reduce_range))))
    assert w == U8S8Weights(peak, ()) and not w.needs_vnni


@pytest.mark.parametrize(("activation_type", "needs"), [(QuantType.QUInt8, True),
                                                        (QuantType.QInt8, False)])
def test_qdq_weights_count_only_against_uint8_activations(tmp_path: Path,
                                                          activation_type: QuantType,
                                                          needs: bool) -> None:
    w = u8s8_weights(onnx.load(str(_static(tmp_path, activation_type))))
    assert w.needs_vnni is needs and (w.peak == 127) is needs


def test_shipped_plan_per_target() -> None:
    needs = U8S8Weights(127, ("a", "b", "c", "d"))
    plan, warning = shipped_plan(PROFILES["x86-cpu"], needs)
    assert plan["target_isa"] == "x86_64+vnni" and plan["u8s8_weight_peak"] == 127
    assert "(4 node(s): a, b, c, ...)" in plan["reason"]
    assert warning.startswith("x86-cpu: the shipped model's int8 weights (up to |q| 127 "
                              "against uint8 activations) are exact only on x86 CPUs with VNNI")
    assert shipped_plan(PROFILES["x86-cpu-vnni"], needs) == (plan, "")
    fine, warning = shipped_plan(PROFILES["x86-cpu"], U8S8Weights(64, ()))
    assert fine["target_isa"] == "x86_64" and warning == ""
    assert shipped_plan(PROFILES["arm64-cpu"], needs)[0]["target_isa"] == "arm64"
    assert shipped_plan(PROFILES["cuda-gpu"], needs) == ({}, "")


def test_prequantised_8bit_artifact_is_refused_by_cpus_without_vnni(
        cli, keys_home: Path, tmp_path: Path) -> None:
    """Was: shipped with no target_isa, so an AVX2 device ran it and saturated silently."""
    model = _dynamic(tmp_path, QuantType.QInt8)
    np.savez(tmp_path / "cal.npz", x=_X)
    res = cli("build", model, "--name", "m", "--version", "1.0.0", "--target", "x86-cpu",
              "--calibration", tmp_path / "cal.npz", "--out", tmp_path / "out", "--json")
    assert res.code == 0, res.err
    assert any("exact only on x86 CPUs with VNNI" in w for w in json.loads(res.out)["warnings"])
    entry = read_bundle(Path(json.loads(res.out)["bundle"])).manifest.artifact_for("x86-cpu")
    assert entry is not None and entry.details["pass"] == "prequantised"
    assert entry.details["plan"]["target_isa"] == "x86_64+vnni"
    refusal = isa_shortfall(entry, CpuFacts.parse(AVX2, "x86_64"))
    assert refusal is not None and "need VNNI" in refusal
    assert isa_shortfall(entry, CpuFacts.parse(AVX512_VNNI, "x86_64")) is None
