"""The hardware suite run as a device runs it, against real bundles: a good bundle passes and
blesses; each bad input is a clear one-line failure, never a crash and never a silent pass."""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path

import pytest

from edgeops.keys import KeyStore
from tests.hardware_tests.bundles import build_bundle, corrupt_member
from tests.hardware_tests.conftest import SuiteRun

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                                reason="these bundles carry the x86-cpu artifact this machine "
                                       "picks by default")

Runner = Callable[..., SuiteRun]
CHECKS = ["integrity", "load", "golden", "latency", "memory", "stability"]


def _no_traceback(run: SuiteRun) -> None:
    assert "Traceback" not in run.output
    assert "INTERNALERROR" not in run.output
    assert "During handling of the above exception" not in run.output


def test_good_bundle_passes_and_reports(good_run: SuiteRun) -> None:
    assert good_run.returncode == 0, good_run.output
    report = good_run.report
    assert report["passed"] is True
    assert [c["name"] for c in report["checks"]] == CHECKS
    assert all(c["outcome"] == "passed" for c in report["checks"])
    assert (report["bundle"], report["version"], report["target"], report["hardware"]) == (
        "mlp", "1.0.0", "x86-cpu", "x86_64")
    assert "signed by" in good_run.check("integrity")["message"]
    assert good_run.check("load")["figures"]["active_providers"][0] == "CPUExecutionProvider"
    assert good_run.check("latency")["figures"]["p95_ms"] > 0
    assert report["machine"]["machine"] == platform.machine()
    assert "before" in report["thermal"] and "after" in report["thermal"]
    assert "PASSED" in good_run.markdown and "| golden | passed |" in good_run.markdown


def test_junit_xml_carries_verdicts_and_figures(good_run: SuiteRun) -> None:
    cases = good_run.junit_cases()
    assert sorted(cases) == sorted(f"test_{c}" for c in CHECKS)
    props = {p.attrib["name"]: p.attrib["value"]
             for p in cases["test_latency"].iter("property")}
    assert props["latency.verdict"] == "passed"
    assert float(props["latency.p95_ms"]) > 0


def test_report_manifest_digest_is_the_bundle_s(good_run: SuiteRun, good_bundle: Path) -> None:
    import hashlib

    from edgeops.bundle import read_bundle

    digest = hashlib.sha256(read_bundle(good_bundle).manifest_bytes).hexdigest()
    assert good_run.report["manifest_sha256"] == digest


def test_no_artifact_for_this_machine_s_target(tmp_path: Path, store: KeyStore,
                                               run_suite: Runner) -> None:
    bundle = build_bundle(tmp_path, store, target="arm64-cpu")
    run = run_suite(bundle)
    assert run.returncode == 1
    assert "has no artifact for target x86-cpu (it has: arm64-cpu)" in run.output
    _no_traceback(run)
    assert run.report["passed"] is False
    assert all(c["outcome"] == "failed" for c in run.report["checks"])


def test_explicit_target_is_tested(tmp_path: Path, store: KeyStore, run_suite: Runner) -> None:
    # arm64-cpu is ONNX on the CPU provider, so it runs here too when asked for by name.
    bundle = build_bundle(tmp_path, store, target="arm64-cpu")
    run = run_suite(bundle, "--target", "arm64-cpu")
    assert run.returncode == 0, run.output
    assert (run.report["target"], run.report["hardware"]) == ("arm64-cpu", "aarch64")


def test_vnni_artifact_is_blessed_only_on_a_vnni_cpu(tmp_path: Path, store: KeyStore,
                                                     run_suite: Runner) -> None:
    # The run takes this machine's own /proc/cpuinfo, so one branch runs per machine; the
    # other is covered with injected CPU facts in test_hw_checks.
    from edgeops.cpu import read_cpu_facts
    from tests.cpuinfo import VNNI_PLAN

    bundle = build_bundle(tmp_path, store, target="x86-cpu-vnni", precision="int8",
                          details={"plan": VNNI_PLAN})
    run = run_suite(bundle, "--target", "x86-cpu-vnni")
    _no_traceback(run)
    assert (run.report["target"], run.report["hardware"]) == ("x86-cpu-vnni", "x86_64-vnni")
    if read_cpu_facts().vnni:
        assert run.returncode == 0, run.output
        assert run.report["passed"] is True
    else:
        load = run.check("load")
        assert load["outcome"] == "skipped"
        assert load["message"].startswith("hardware missing: the x86-cpu-vnni int8 artifact "
                                          "has 8-bit weights that need VNNI")
        assert run.report["passed"] is False


def test_corrupted_artifact_fails_clearly(good_bundle: Path, tmp_path: Path,
                                          run_suite: Runner) -> None:
    bad = corrupt_member(good_bundle, "artifacts/x86-cpu/model.onnx", tmp_path / "bad.edgebundle")
    run = run_suite(bad)
    assert run.returncode == 1
    assert "does not match its SHA-256 in the manifest" in run.output
    _no_traceback(run)
    assert run.check("integrity")["outcome"] == "failed"
    assert run.check("load")["outcome"] == "failed"
    assert run.report["passed"] is False


def test_manifest_without_golden_samples(tmp_path: Path, store: KeyStore,
                                         run_suite: Runner) -> None:
    bundle = build_bundle(tmp_path, store, with_golden=False)
    run = run_suite(bundle)
    assert run.returncode == 1
    assert "manifest has no golden samples for target x86-cpu" in run.output
    _no_traceback(run)
    assert run.check("golden")["outcome"] == "failed"
    assert run.check("load")["outcome"] == "passed"          # the rest still measured
    assert run.report["passed"] is False


def test_golden_outputs_that_do_not_match(tmp_path: Path, store: KeyStore,
                                          run_suite: Runner) -> None:
    bundle = build_bundle(tmp_path, store, golden_offset=0.01)
    run = run_suite(bundle)
    assert run.returncode == 1
    assert "output 'y' differs from golden" in run.output
    assert run.check("golden")["figures"]["y"]["max_abs_error"] == pytest.approx(0.01, rel=1e-3)


def test_latency_over_the_manifest_budget(tmp_path: Path, store: KeyStore,
                                          run_suite: Runner) -> None:
    bundle = build_bundle(tmp_path, store, metrics={"latency_budget_ms": 1e-6})
    run = run_suite(bundle, "--latency-slack-ms", "0")
    assert run.returncode == 1
    assert "latency over the manifest's figures" in run.output
    assert run.check("latency")["outcome"] == "failed"


def test_no_latency_figure_is_reported_not_passed(tmp_path: Path, store: KeyStore,
                                                  run_suite: Runner) -> None:
    bundle = build_bundle(tmp_path, store, metrics={})
    run = run_suite(bundle)
    assert run.returncode == 0, run.output
    latency = run.check("latency")
    assert latency["outcome"] == "skipped" and latency["applicable"] is False
    assert latency["message"].startswith("no budget in manifest")
    assert "| latency | not applicable | no budget in manifest" in run.markdown


def test_memory_over_the_manifest_figure(tmp_path: Path, store: KeyStore,
                                         run_suite: Runner) -> None:
    bundle = build_bundle(tmp_path, store, metrics={"peak_memory_mib": 0.001})
    run = run_suite(bundle, process=True)     # growth from a fresh process's baseline
    assert run.returncode == 1
    assert run.check("memory")["outcome"] == "failed"
    assert "peak memory" in run.check("memory")["message"]


def test_missing_gpu_skips_naming_it_and_does_not_bless(tmp_path: Path, store: KeyStore,
                                                        run_suite: Runner) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA: the absent-hardware path cannot be shown here")
    bundle = build_bundle(tmp_path, store, target="cuda-gpu",
                          providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    run = run_suite(bundle, "--target", "cuda-gpu", "-rs")
    assert "CUDAExecutionProvider is not available" in run.output
    assert run.check("load")["outcome"] == "skipped"
    assert run.check("golden")["outcome"] == "skipped"
    assert run.report["passed"] is False                    # skipped is never a pass
    deselected = run_suite(bundle, "--target", "cuda-gpu", "-m", "not gpu")
    assert "6 deselected" in deselected.output


def test_wrong_signing_key_fails_integrity(good_bundle: Path, tmp_path: Path,
                                           run_suite: Runner) -> None:
    from tests.hardware_tests.bundles import make_keystore

    other = make_keystore(tmp_path / "other")
    run = run_suite(good_bundle, "--key", str(other.dir / "targets.pub.json"))
    assert run.returncode == 1
    assert "not signed by a trusted targets key" in run.output
    assert run.check("integrity")["outcome"] == "failed"


def test_unreadable_bundle(tmp_path: Path, run_suite: Runner) -> None:
    junk = tmp_path / "junk.edgebundle"
    junk.write_bytes(b"not a tar file at all" * 40)
    run = run_suite(junk)
    assert run.returncode == 1
    assert "is not a readable edgeops bundle" in run.output
    _no_traceback(run)
    assert not run.report_path.exists()                    # nothing to bless, nothing written


def test_missing_bundle_option_is_a_usage_error(run_suite: Runner) -> None:
    run = run_suite(None)
    assert run.returncode == 4                             # pytest's usage-error exit code
    assert "hardware_tests needs --bundle FILE" in run.output
    _no_traceback(run)


def test_bad_setting_is_a_usage_error(good_bundle: Path, run_suite: Runner) -> None:
    run = run_suite(good_bundle, "--latency-margin", "0.5")
    assert run.returncode == 4
    assert "margins are ratios >= 1.0" in run.output


def test_python_m_entry_point(good_bundle: Path, run_suite: Runner) -> None:
    run = run_suite(good_bundle, module=True)
    assert run.returncode == 0, run.output
    assert run.report["passed"] is True


@pytest.fixture(scope="module")
def built_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle made by the real pipeline (`edgeops build`) for both CPU profiles of CI (the
    CLI in this process: tests/clirun.py)."""
    from tests.clirun import run_edgeops
    from tests.hardware_tests.bundles import mlp_model

    tmp = tmp_path_factory.mktemp("built")
    env = {"EDGEOPS_HOME": str(tmp / "home"), "EDGEOPS_KEY_PASSPHRASE": "pw"}
    r = run_edgeops("keys", "init", env=env)
    assert r.returncode == 0, r.stderr
    model = mlp_model(tmp / "model.onnx")
    r = run_edgeops("build", model, "--name", "mlp-built", "--version", "2.0.0",
                    "--target", "x86-cpu", "--target", "tflite-cpu", "--sign-latency",
                    "--out", tmp / "out", "--json", env=env)
    assert r.returncode == 0, r.stderr
    return tmp / "out" / "mlp-built-2.0.0.edgebundle"


# Latency figures of a tiny model are noise on a shared CI machine: the latency verdict is
# tested above with budgets that cannot be met; here a wide stated margin keeps the runs
# about loading and golden replay in the real runtimes.
@pytest.mark.slow
@pytest.mark.parametrize(("target", "runtime", "hardware"), [
    ("x86-cpu", "onnxruntime", "x86_64"), ("tflite-cpu", "litert", "arm-litert")])
def test_bundle_from_edgeops_build_passes(built_bundle: Path, run_suite: Runner, target: str,
                                          runtime: str, hardware: str) -> None:
    run = run_suite(built_bundle, "--target", target, "--latency-margin", "100")
    assert run.returncode == 0, run.output
    report = run.report
    assert (report["target"], report["hardware"], report["passed"]) == (target, hardware, True)
    assert run.check("load")["figures"]["runtime"] == runtime
    assert run.check("golden")["outcome"] == "passed"
    assert run.check("latency")["figures"]["manifest_budget_ms"] > 0


def test_missing_npu_delegate_skips_naming_it(built_bundle: Path, tmp_path: Path,
                                              store: KeyStore, run_suite: Runner) -> None:
    """A real LiteRT artifact declared for the Edge TPU: without libedgetpu the checks skip,
    name the library, carry the `npu` marker and do not bless."""
    import dataclasses

    from edgeops.bundle import Manifest, read_bundle, write_bundle
    from tests.hardware_tests.bundles import PASSPHRASE

    src = read_bundle(built_bundle)
    lite = src.manifest.artifact_for("tflite-cpu")
    assert lite is not None and lite.golden is not None
    files = {}
    for ref, name in ((lite.file, "model.tflite"), (lite.golden, "golden.npz")):
        files[f"artifacts/edgetpu/{name}"] = src.extract_file(ref.path, tmp_path / name)
    entry = dataclasses.replace(
        lite, target="edgetpu", providers=("EdgeTPUDelegate", "XNNPACK"),
        file=dataclasses.replace(lite.file, path="artifacts/edgetpu/model.tflite"),
        golden=dataclasses.replace(lite.golden, path="artifacts/edgetpu/golden.npz"))
    manifest: Manifest = dataclasses.replace(src.manifest, artifacts=(entry,))
    bundle = write_bundle(tmp_path / "tpu.edgebundle", manifest, files,
                          [store.signer("targets", PASSPHRASE)])
    run = run_suite(bundle, "--target", "edgetpu", "-rs")
    assert "EdgeTPUDelegate delegate libedgetpu.so.1 cannot be loaded" in run.output
    assert run.check("load")["outcome"] == "skipped"
    assert run.check("integrity")["outcome"] == "passed"
    assert (run.report["hardware"], run.report["passed"]) == ("edgetpu", False)
    assert "6 deselected" in run_suite(bundle, "--target", "edgetpu", "-m", "not npu").output
