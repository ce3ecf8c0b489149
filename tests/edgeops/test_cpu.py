"""Which CPUs compute an artifact as built: /proc/cpuinfo text and manifest entries in, a refusal
reason (or None) out. Pure, so the table covers every CPU without owning one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgeops.bundle import ArtifactEntry, FileRef
from edgeops.cpu import (
    CpuFacts,
    artifact_needs_vnni,
    isa_shortfall,
    read_cpu_facts,
    target_shortfall,
)
from tests.cpuinfo import ARM64, AVX2, AVX512_NO_VNNI, AVX512_VNNI, AVX_VNNI

CPUS = {
    "avx2": CpuFacts.parse(AVX2, "x86_64"),
    "avx512-no-vnni": CpuFacts.parse(AVX512_NO_VNNI, "x86_64"),
    "avx512_vnni": CpuFacts.parse(AVX512_VNNI, "x86_64"),
    "avx_vnni": CpuFacts.parse(AVX_VNNI, "x86_64"),
    "arm64": CpuFacts.parse(ARM64, "aarch64"),
    "x86-unreadable": CpuFacts.parse(None, "x86_64"),
    "x86-no-flags-line": CpuFacts.parse("processor\t: 0\n", "x86_64"),
}
NO_VNNI = {"avx2", "avx512-no-vnni", "x86-unreadable", "x86-no-flags-line"}


def entry(target: str, precision: str = "int8", plan: dict[str, Any] | None = None
          ) -> ArtifactEntry:
    return ArtifactEntry(target=target, file=FileRef(f"artifacts/{target}/model.onnx",
                                                     "0" * 64, 1),
                         format="onnx", runtime="onnxruntime",
                         providers=("CPUExecutionProvider",), precision=precision,
                         details={"plan": plan} if plan is not None else {})


@dataclass(frozen=True)
class Artifact:
    what: str
    entry: ArtifactEntry
    needs_vnni: bool


ARTIFACTS = [
    # issue 16: 8-bit weights on some layers, each on an input clamped to 0..127 and proved by
    # converters/x86_exact at build time: exact on every x86 CPU, so never refused
    Artifact("x86-cpu int8 with a per-layer bit split (8-bit weights on 7-bit inputs)",
             entry("x86-cpu", plan={"reduce_range": True, "target_isa": "x86_64",
                                    "exact_split": True, "bit_split": {
                                        "policy": "per-layer", "layers": {
                                            "conv": {"bits": "w8a7", "weight_bits": 8}}}}),
             False),
    Artifact("x86-cpu-vnni int8 (8-bit, recorded)",
             entry("x86-cpu-vnni", plan={"reduce_range": False, "target_isa": "x86_64+vnni"}),
             True),
    Artifact("x86-cpu-vnni int8-dynamic (8-bit, recorded)",
             entry("x86-cpu-vnni", "int8-dynamic",
                   plan={"reduce_range": False, "target_isa": "x86_64+vnni"}), True),
    Artifact("x86-cpu-vnni int8, no plan recorded: the profile declares VNNI",
             entry("x86-cpu-vnni"), True),
    Artifact("x86-cpu int8 from before the target decided, 8-bit weights",
             entry("x86-cpu", plan={"reduce_range": False, "weight_type": "int8"}), True),
    Artifact("x86-cpu int8 (7-bit, recorded)",
             entry("x86-cpu", plan={"reduce_range": True, "target_isa": "x86_64"}), False),
    Artifact("x86-cpu int8 from before the target decided, 7-bit weights",
             entry("x86-cpu", plan={"reduce_range": True}), False),
    Artifact("x86-cpu-vnni fp32", entry("x86-cpu-vnni", "fp32"), False),
    Artifact("arm64-cpu int8 (8-bit s8s8)",
             entry("arm64-cpu", plan={"reduce_range": False, "target_isa": "arm64"}), False),
    Artifact("arm64-cpu int8 from before target_isa", entry("arm64-cpu",
                                                            plan={"reduce_range": False}), False),
    Artifact("qnn-npu int8", entry("qnn-npu", plan={"reduce_range": False}), False),
]


def test_flags_are_parsed_from_x86_and_arm_cpuinfo() -> None:
    assert CPUS["avx512_vnni"].vnni and CPUS["avx_vnni"].vnni
    assert not CPUS["avx2"].vnni and not CPUS["avx512-no-vnni"].vnni
    assert CPUS["arm64"].flags is not None and "asimddp" in CPUS["arm64"].flags
    assert CPUS["arm64"].widens_int8 and not CPUS["avx2"].widens_int8
    # no flags line at all is "unknown", never "no flags"
    assert CPUS["x86-unreadable"].flags is None and CPUS["x86-no-flags-line"].flags is None


def test_facts_keep_the_converters_build_machine_shape() -> None:
    assert CPUS["avx512_vnni"].to_dict() == {"machine": "x86_64", "vnni": True, "avx512": True,
                                             "avx2": True, "arm_dotprod": False}
    assert CPUS["arm64"].to_dict()["arm_dotprod"] is True
    assert CPUS["x86-unreadable"].to_dict()["vnni"] is False


def test_an_unreadable_cpuinfo_file_gives_unknown_flags(tmp_path: Path) -> None:
    assert read_cpu_facts(tmp_path / "absent", machine="x86_64") == CpuFacts("x86_64", None)
    f = tmp_path / "cpuinfo"
    f.write_text(AVX_VNNI)
    assert read_cpu_facts(f, machine="x86_64").vnni


@pytest.mark.parametrize("art", ARTIFACTS, ids=lambda a: a.what)
def test_which_artifacts_need_vnni(art: Artifact) -> None:
    assert artifact_needs_vnni(art.entry) is art.needs_vnni


@pytest.mark.parametrize("cpu", sorted(CPUS))
@pytest.mark.parametrize("art", ARTIFACTS, ids=lambda a: a.what)
def test_refused_exactly_where_the_cpu_would_saturate(art: Artifact, cpu: str) -> None:
    reason = isa_shortfall(art.entry, CPUS[cpu])
    if art.needs_vnni and cpu in NO_VNNI:
        assert reason is not None and "\n" not in reason
        assert f"the {art.entry.target} {art.entry.precision} artifact" in reason
        assert "wrong outputs" in reason
        assert ("could not be read" if cpu.startswith("x86-") else
                "has neither avx512_vnni nor avx_vnni") in reason
    else:
        assert reason is None, reason


@pytest.mark.parametrize(("target", "cpu", "refused"), [
    ("x86-cpu-vnni", "avx2", True),
    ("x86-cpu-vnni", "avx512-no-vnni", True),
    ("x86-cpu-vnni", "x86-unreadable", True),
    ("x86-cpu-vnni", "avx512_vnni", False),
    ("x86-cpu-vnni", "avx_vnni", False),
    ("x86-cpu-vnni", "arm64", False),
    ("x86-cpu", "avx2", False),
    ("arm64-cpu", "avx2", False),
    ("no-such-target", "avx2", False),
])
def test_enrolment_warning(target: str, cpu: str, refused: bool) -> None:
    reason = target_shortfall(target, CPUS[cpu])
    assert (reason is not None) is refused
    if reason is not None:
        assert reason.startswith(f"target {target} declares VNNI but this x86_64 CPU")
