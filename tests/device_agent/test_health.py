"""Health check: golden replay, tolerance, NaN, latency, and the isolated child process."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

from device_agent.health import (
    HealthSettings,
    check_health,
    check_slot,
    check_slot_isolated,
    latency_reference_ms,
    load_golden,
)
from device_agent.slots import SlotStore
from edgeops.bundle import read_bundle
from edgeops.bundle.manifest import ArtifactEntry
from edgeops.runtime import ModelLoadError, load_runner
from tests.device_agent.bundles import Fleet, build_bundle, bundle_parts

FAST = HealthSettings(warmup_runs=1, timed_runs=5)


def slot_for(tmp_path: Path, bundle: Path) -> Path:
    parts = bundle_parts(bundle)
    store = SlotStore(tmp_path / "slots")
    w = store.begin_install()
    w.write_bytes("manifest.json", parts.manifest)
    w.write_bytes("model.onnx", parts.artifact)
    w.write_bytes("golden.npz", parts.golden)
    w.commit(name="m", version="1.0.0", target="x86-cpu", model_file="model.onnx")
    return w.dir


def unpacked(tmp_path: Path, fleet: Fleet, bundle_dir: Path
             ) -> tuple[ArtifactEntry, Path, bytes]:
    """A bundle without a latency figure: its x86-cpu entry, the model on disk, golden.npz."""
    b = read_bundle(build_bundle(bundle_dir, fleet, metrics={}))
    entry = b.manifest.artifact_for("x86-cpu")
    assert entry is not None and entry.golden is not None
    (tmp_path / "m.onnx").write_bytes(b.read_file(entry.file.path))
    return entry, tmp_path / "m.onnx", b.read_file(entry.golden.path)


@pytest.mark.parametrize(("metrics", "expected"), [
    ({"latency_budget_ms": 5, "latency_ms": {"p95": 1}}, (5.0, "latency_budget_ms")),
    ({"latency_ms_p95": 2.5}, (2.5, "latency_ms_p95")),
    ({"latency_ms": {"p50": 1.0, "p95": 3.0}}, (3.0, "latency_ms.p95")),
    ({"latency_ms": {"p50": 1.0}}, (1.0, "latency_ms.p50")),
    ({"latency_ms_p95": True}, (None, None)),
    ({}, (None, None)),
])
def test_latency_reference_forms(metrics: dict[str, object],
                                 expected: tuple[float | None, str | None]) -> None:
    ref, source = latency_reference_ms(metrics)
    assert ref == expected[0]
    if expected[1] is not None:
        assert source == expected[1]
    else:
        assert "skipped" in source


def test_healthy_model_and_missing_latency_is_noted(tmp_path: Path, fleet: Fleet,
                                                    bundle_dir: Path) -> None:
    entry, model, golden = unpacked(tmp_path, fleet, bundle_dir)
    runner = load_runner(model, runtime="onnxruntime",
                         providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    r = check_health(runner, entry, golden, FAST)
    assert r.ok and not r.latency_checked and r.samples == 3
    assert any("latency check skipped" in n for n in r.notes)
    assert any("CUDAExecutionProvider" in n for n in r.notes)    # not on this machine
    assert r.max_abs_err is not None and r.max_abs_err <= 1e-5


class _FellBack:
    """Fake, named as such: a real runner whose session reports that its first provider did not
    start. The real case (TensorRT listed as available, libnvinfer missing, ORT falling back to
    CUDA with only a printed warning) needs a GPU box: tests/gpu covers it there."""

    def __init__(self, real: object) -> None:
        self._real = real
        self.providers = ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                          "CPUExecutionProvider")
        self.active_providers = ("CUDAExecutionProvider", "CPUExecutionProvider")
        self.run = real.run                                      # type: ignore[attr-defined]


def test_health_reports_the_provider_the_session_really_runs_on(tmp_path: Path, fleet: Fleet,
                                                                 bundle_dir: Path) -> None:
    entry, model, golden = unpacked(tmp_path, fleet, bundle_dir)
    real = load_runner(model, runtime="onnxruntime")
    same = check_health(real, entry, golden, FAST)
    assert same.providers == ("CPUExecutionProvider",)
    assert not any("did not start" in n for n in same.notes)
    r = check_health(_FellBack(real), entry, golden, FAST)  # type: ignore[arg-type]
    assert r.ok and r.providers[0] == "CUDAExecutionProvider"
    assert "TensorrtExecutionProvider did not start here; the model runs on " \
           "CUDAExecutionProvider" in r.notes


@pytest.mark.parametrize(("data", "needle"), [
    (b"not a zip", "unreadable"),
    (b"", "unreadable"),
])
def test_bad_golden_files(data: bytes, needle: str) -> None:
    with pytest.raises(Exception, match=needle):
        load_golden(data)


def test_golden_without_outputs_or_over_limit() -> None:
    buf = io.BytesIO()
    np.savez(buf, **{"input/x": np.zeros((2, 4), np.float32)})
    with pytest.raises(Exception, match="no input/ or no output/"):
        load_golden(buf.getvalue())
    with pytest.raises(Exception, match="over the"):
        load_golden(buf.getvalue(), max_bytes=10)


@pytest.mark.parametrize(("kind", "needle"), [
    ("affine", None),
    ("nan", "NaN"),
    ("broken", "does not load"),
    ("wrong", "differs from golden"),
    ("slow", "too slow"),
])
def test_isolated_check(tmp_path: Path, fleet: Fleet, bundle_dir: Path, kind: str,
                        needle: str | None) -> None:
    slot = slot_for(tmp_path, build_bundle(bundle_dir, fleet, kind=kind))
    r = check_slot_isolated(slot, "x86-cpu", FAST)
    assert r.ok == (needle is None), r.reason
    if needle:
        assert r.reason is not None and needle in r.reason
    assert r.to_dict()["ok"] == r.ok
    assert check_slot(slot, "x86-cpu", FAST).ok == r.ok


def test_isolated_check_survives_a_crashing_and_a_hanging_child(tmp_path: Path, fleet: Fleet,
                                                                 bundle_dir: Path) -> None:
    slot = slot_for(tmp_path, build_bundle(bundle_dir, fleet))
    segv = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    r = check_slot_isolated(slot, "x86-cpu", FAST, command=segv)
    assert not r.ok and r.reason is not None and "crashed the runtime (signal 11)" in r.reason
    hang = [sys.executable, "-c", "import time; time.sleep(60)"]
    r = check_slot_isolated(slot, "x86-cpu", HealthSettings(timeout_s=1.0), command=hang)
    assert not r.ok and r.reason is not None and "did not finish within 1 s" in r.reason
    boom = [sys.executable, "-c", "raise SystemExit('runtime exploded')"]
    r = check_slot_isolated(slot, "x86-cpu", FAST, command=boom)
    assert not r.ok and r.reason is not None and "runtime exploded" in r.reason


def test_unreadable_slot_and_wrong_target(tmp_path: Path, fleet: Fleet,
                                          bundle_dir: Path) -> None:
    slot = slot_for(tmp_path, build_bundle(bundle_dir, fleet))
    r = check_slot(slot, "arm64-cpu", FAST)
    assert not r.ok and "no artifact for target" in str(r.reason)
    (slot / "manifest.json").write_bytes(b"{}")
    r = check_slot(slot, "x86-cpu", FAST)
    assert not r.ok and "unreadable" in str(r.reason)


def test_runtime_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="missing"):
        load_runner(tmp_path / "none.onnx", runtime="onnxruntime")
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_runner(tmp_path / "junk.onnx", runtime="onnxruntime")
    with pytest.raises(ModelLoadError, match="unknown runtime"):
        load_runner(tmp_path / "junk.onnx", runtime="tensorrt")
    (tmp_path / "junk.tflite").write_bytes(b"\x00junk")
    with pytest.raises(ModelLoadError, match="LiteRT cannot load"):
        load_runner(tmp_path / "junk.tflite", runtime="litert")


def test_signed_latency_budget_is_the_limit(tmp_path: Path, fleet: Fleet,
                                            bundle_dir: Path) -> None:
    slot = slot_for(tmp_path, build_bundle(bundle_dir, fleet,
                                           metrics={"latency_budget_ms": 1e-6}))
    r = check_slot(slot, "x86-cpu", FAST)
    assert not r.ok and "too slow" in str(r.reason) and "latency_budget_ms" in str(r.reason)
    relaxed = check_slot(slot, "x86-cpu", HealthSettings(warmup_runs=1, timed_runs=5,
                                                         budget_slack=1e9))
    assert relaxed.ok and relaxed.latency_checked and relaxed.latency_reference_ms == 1e-6


def test_isolated_check_is_not_shadowed_by_packages_in_the_working_directory(
        tmp_path: Path, fleet: Fleet, bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``edgeops/`` or ``device_agent/`` directory where the agent runs used to shadow the
    packages in the child (``python -m`` puts the working directory first on sys.path)."""
    slot = slot_for(tmp_path, build_bundle(bundle_dir, fleet))
    cwd = tmp_path / "agent-cwd"
    for pkg in ("edgeops", "device_agent"):
        (cwd / pkg).mkdir(parents=True)
        (cwd / pkg / "__init__.py").write_text("raise ImportError('shadowed by the cwd')\n")
    monkeypatch.chdir(cwd)
    old_way = check_slot_isolated(slot, "x86-cpu", FAST,
                                  command=[sys.executable, "-m", "device_agent.health"])
    assert not old_way.ok and "shadowed by the cwd" in str(old_way.reason)   # the field bug
    r = check_slot_isolated(slot, "x86-cpu", FAST)
    assert r.ok, r.reason


_AGENT = """\
import sys
from pathlib import Path
from device_agent.health import HealthSettings, check_slot_isolated
print("checking", flush=True)
# a check that never ends on its own: the agent is killed long before its timeout
check_slot_isolated(Path(sys.argv[1]), "x86-cpu", HealthSettings(timed_runs=10**9, timeout_s=300))
"""


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")   # a zombie is dead


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_sigkilled_agent_takes_its_health_check_child_with_it(tmp_path: Path, fleet: Fleet,
                                                               bundle_dir: Path) -> None:
    import os
    import signal
    import subprocess
    import time

    slot = slot_for(tmp_path, build_bundle(bundle_dir, fleet))
    repo = Path(__file__).resolve().parents[2]
    agent = subprocess.Popen([sys.executable, "-c", _AGENT, str(slot)], cwd=tmp_path,
                             stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(repo)})
    child = None
    try:
        assert agent.stdout is not None and agent.stdout.readline() == b"checking\n"
        deadline = time.monotonic() + 60
        while child is None or "onnxruntime" not in Path(f"/proc/{child}/maps").read_text():
            assert time.monotonic() < deadline, "the health check child never ran the model"
            time.sleep(0.1)       # running the model: past the point where it asked the kernel
            kids = _children(agent.pid)
            child = kids[0] if kids else None
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child):
            assert time.monotonic() < deadline, f"health child {child} outlived its agent"
            time.sleep(0.05)
    finally:
        agent.kill()
        agent.wait(10)
        if agent.stdout is not None:
            agent.stdout.close()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)
