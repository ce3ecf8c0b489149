"""Is a freshly activated model fit to serve? Load it, replay its golden samples, time it.

Why: a signed, untampered artifact can still be wrong for *this* device (a runtime that crashes
on it, a delegate that returns NaN, a CPU too slow for it). The bundle carries golden inputs and
the artifact's own outputs (``golden.npz``, layout in edgeops/golden.py: ``input/<name>``
has samples on the first axis, each fed as a batch of one; ``output/<name>`` the stacked
outputs), the tolerance to compare them with and the latency measured at build time. Any
failure becomes a one-line ``reason`` the fleet sees.

:func:`check_slot_isolated` runs the same check in a child process (``python -P -m
device_agent.health``), so a model that segfaults the runtime or hangs it kills the child, not
the agent: the old model keeps serving. ``-P`` keeps the working directory off ``sys.path`` (a
directory named ``edgeops/`` there would otherwise shadow the package) and the child's
``PYTHONPATH`` starts with the directory the agent's own ``device_agent`` came from; the child
asks the kernel for SIGKILL when the agent dies (``PR_SET_PDEATHSIG``), so a killed agent
leaves no health check running.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeops.bundle.manifest import ArtifactEntry, Manifest, TensorSpec
from edgeops.errors import EdgeOpsError
from edgeops.golden import golden_feeds, sample_output
from edgeops.runtime import ModelRunner, load_runner

__all__ = [
    "DEFAULT_HEALTH",
    "HealthResult",
    "HealthSettings",
    "check_health",
    "check_slot",
    "check_slot_isolated",
    "latency_reference_ms",
    "load_golden",
]


@dataclass(frozen=True)
class HealthSettings:
    """How strict the post-activation check is. Units in the names."""

    warmup_runs: int = 2
    timed_runs: int = 20
    # The device may be busier than the build machine: a model passes when its p50 here is
    # within this factor of the manifest's latency figure (p95 at build time).
    latency_slack: float = 2.0
    # An explicit ``latency_budget_ms`` (``edgeops build --sign-latency``: 2 × p95 at build
    # time, rounded up) is the limit itself; raise this only for a knowingly slower device.
    budget_slack: float = 1.0
    default_atol: float = 1e-4
    default_rtol: float = 1e-3
    threads: int = 1
    timeout_s: float = 120.0          # isolated check: a hung runtime counts as a failure
    max_golden_bytes: int = 8 * 1024**2


DEFAULT_HEALTH = HealthSettings()


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    reason: str | None = None
    max_abs_err: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    latency_reference_ms: float | None = None
    latency_checked: bool = False
    samples: int = 0
    providers: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["providers"], d["notes"] = list(self.providers), list(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HealthResult:
        return cls(ok=bool(d["ok"]), reason=d.get("reason"), max_abs_err=d.get("max_abs_err"),
                   latency_ms_p50=d.get("latency_ms_p50"),
                   latency_ms_p95=d.get("latency_ms_p95"),
                   latency_reference_ms=d.get("latency_reference_ms"),
                   latency_checked=bool(d.get("latency_checked")),
                   samples=int(d.get("samples", 0)),
                   providers=tuple(d.get("providers", ())), notes=tuple(d.get("notes", ())))


def latency_reference_ms(metrics: Mapping[str, Any]) -> tuple[float | None, str]:
    """The manifest's latency figure and where it came from; (None, why) when absent.

    Accepted forms, first match wins: ``latency_budget_ms`` (an explicit budget),
    ``latency_ms_p95``, ``latency_ms: {"p95": ...}`` (converters/validate.py), ``latency_ms_p50``
    or ``latency_ms: {"p50": ...}``.
    """
    nested = metrics.get("latency_ms")
    candidates: list[tuple[str, Any]] = [
        ("latency_budget_ms", metrics.get("latency_budget_ms")),
        ("latency_ms_p95", metrics.get("latency_ms_p95")),
        ("latency_ms.p95", nested.get("p95") if isinstance(nested, dict) else None),
        ("latency_ms_p50", metrics.get("latency_ms_p50")),
        ("latency_ms.p50", nested.get("p50") if isinstance(nested, dict) else None),
    ]
    for key, value in candidates:
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value), key
    return None, "manifest has no latency figure: latency check skipped"


def load_golden(data: bytes, max_bytes: int = 8 * 1024**2
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Golden npz → (inputs, outputs). No pickles: golden data is untrusted until checked."""
    if len(data) > max_bytes:
        raise _Fail(f"golden file is {len(data)} bytes, over the {max_bytes}-byte limit")
    inputs: dict[str, np.ndarray] = {}
    outputs: dict[str, np.ndarray] = {}
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            for key in z.files:
                prefix, _, name = key.partition("/")
                if prefix == "input" and name:
                    inputs[name] = z[key]
                elif prefix == "output" and name:
                    outputs[name] = z[key]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise _Fail(f"golden file is unreadable ({exc})") from None
    if not inputs or not outputs:
        raise _Fail("golden file holds no input/ or no output/ arrays")
    n = {a.shape[0] if a.ndim else -1 for a in inputs.values()}
    if len(n) != 1 or -1 in n:
        raise _Fail("golden inputs disagree on the number of samples")
    return inputs, outputs


class _Fail(Exception):
    """A health failure with its reason; internal, turned into HealthResult(ok=False)."""


def check_health(runner: ModelRunner, entry: ArtifactEntry, golden: bytes,
                 settings: HealthSettings = DEFAULT_HEALTH,
                 signature: Sequence[TensorSpec] = ()) -> HealthResult:
    """Replay golden samples on ``runner`` and time it; never raises for a model's fault.

    ``signature`` (the manifest's inputs) says how each input is fed; a streaming model's
    samples (inputs with ``state_from``) are replayed in order, each step fed the state output
    of the step before on this device, as it will run in service.
    """
    notes: list[str] = []
    requested = tuple(getattr(runner, "providers", ()))
    # What the session really runs on: ONNX Runtime drops a provider that fails to start (say
    # TensorRT without libnvinfer) with a printed warning, not an error. The fleet hears of it.
    providers = tuple(getattr(runner, "active_providers", ()) or requested)
    skipped = tuple(getattr(runner, "skipped_providers", ()))
    if skipped:
        notes.append(f"providers not available here, skipped: {', '.join(skipped)}")
    if requested and providers and providers[0] != requested[0]:
        notes.append(f"{requested[0]} did not start here; the model runs on {providers[0]}")
    try:
        inputs, outputs = load_golden(golden, settings.max_golden_bytes)
        count = next(iter(inputs.values())).shape[0]
        atol = entry.tolerance.get("atol", settings.default_atol)
        rtol = entry.tolerance.get("rtol", settings.default_rtol)
        worst = 0.0
        feeds = golden_feeds(inputs, signature)
        carried = {t.name: t.state_from for t in signature
                   if t.state_from is not None and t.name in inputs}
        got: dict[str, np.ndarray] = {}
        for i, feed in enumerate(feeds):
            if i and carried:
                missing = sorted(o for o in carried.values() if o not in got)
                if missing:
                    raise _Fail(f"model has no state output {missing[0]!r} to carry")
                feed = {**feed, **{k: np.asarray(got[o]).astype(feed[k].dtype)
                                   for k, o in carried.items()}}
            got = runner.run(feed)
            for name, want in outputs.items():
                if name not in got:
                    raise _Fail(f"model has no output {name!r} that the golden file expects")
                if want.shape[0] <= i:
                    raise _Fail(f"golden output {name!r} has fewer samples than its inputs")
                actual = sample_output(np.asarray(got[name]), want, i)
                expected = want[i]
                if actual.shape != expected.shape:
                    raise _Fail(f"output {name!r} has shape {actual.shape}, golden "
                                f"{expected.shape}")
                if actual.dtype.kind in "fc" and not np.all(np.isfinite(actual)):
                    raise _Fail(f"output {name!r} holds NaN or Inf on golden sample {i}")
                a64, e64 = actual.astype(np.float64), expected.astype(np.float64)
                err = float(np.max(np.abs(a64 - e64))) if a64.size else 0.0
                worst = max(worst, err)
                if not np.allclose(a64, e64, atol=atol, rtol=rtol):
                    raise _Fail(f"output {name!r} differs from golden on sample {i}: max |Δ| "
                                f"{err:.3g} over atol {atol:g} / rtol {rtol:g}")
        times = _time_runs(runner, feeds, settings)
        p50, p95 = float(np.percentile(times, 50)), float(np.percentile(times, 95))
        ref, source = latency_reference_ms(entry.metrics)
        if ref is None:
            notes.append(source)
            return HealthResult(True, None, worst, p50, p95, None, False, count, providers,
                                tuple(notes))
        limit = ref * (settings.budget_slack if source == "latency_budget_ms"
                       else settings.latency_slack)
        if p50 > limit:
            raise _Fail(f"too slow: p50 {p50:.3g} ms here, over the {limit:.3g} ms allowed "
                        f"({source} {ref:.3g} ms)")
        return HealthResult(True, None, worst, p50, p95, ref, True, count, providers,
                            tuple(notes))
    except _Fail as exc:
        return HealthResult(False, str(exc), providers=providers, notes=tuple(notes))
    except EdgeOpsError as exc:
        return HealthResult(False, f"model crashed on golden input: {exc.message}",
                            providers=providers, notes=tuple(notes))


def _time_runs(runner: ModelRunner, feeds: list[dict[str, np.ndarray]],
               settings: HealthSettings) -> np.ndarray:
    for i in range(settings.warmup_runs):
        runner.run(feeds[i % len(feeds)])
    times = []
    for i in range(max(1, settings.timed_runs)):
        t0 = time.perf_counter()
        runner.run(feeds[i % len(feeds)])
        times.append((time.perf_counter() - t0) * 1000.0)
    return np.asarray(times)


def check_slot(slot_dir: Path, target: str,
               settings: HealthSettings = DEFAULT_HEALTH) -> HealthResult:
    """Load the model in an installed slot directory (from its manifest) and check it."""
    slot_dir = Path(slot_dir)
    try:
        manifest = Manifest.from_bytes((slot_dir / "manifest.json").read_bytes())
        entry = manifest.artifact_for(target)
        if entry is None:
            return HealthResult(False, f"manifest has no artifact for target {target!r}")
        meta = json.loads((slot_dir / "slot.json").read_bytes())
        golden = (slot_dir / "golden.npz").read_bytes() if entry.golden else b""
    except (OSError, ValueError, KeyError, EdgeOpsError) as exc:
        return HealthResult(False, f"slot is unreadable: {exc}")
    if entry.golden is None:
        return HealthResult(False, "bundle has no golden samples for this target",
                            notes=("the health check needs golden.npz",))
    try:
        runner = load_runner(slot_dir / meta["model_file"], runtime=entry.runtime,
                             providers=entry.providers, threads=settings.threads)
    except EdgeOpsError as exc:
        return HealthResult(False, f"model does not load: {exc.message}")
    try:
        return check_health(runner, entry, golden, settings, manifest.inputs)
    finally:
        runner.close()


def check_slot_isolated(slot_dir: Path, target: str,
                        settings: HealthSettings = DEFAULT_HEALTH, *,
                        command: Sequence[str] = ()) -> HealthResult:
    """:func:`check_slot` in a child process, so crashes and hangs cannot reach the agent.

    ``command`` replaces the interpreter invocation (default ``python -P -m
    device_agent.health``); the slot, target and settings are appended to it.
    """
    prefix = list(command) or [sys.executable, "-P", "-m", "device_agent.health"]
    args = [*prefix, str(slot_dir), target, json.dumps(asdict(settings))]
    env = _child_env(dict(os.environ))
    try:
        proc = subprocess.run(args, capture_output=True, timeout=settings.timeout_s, env=env,
                              check=False)
    except subprocess.TimeoutExpired:
        return HealthResult(False, f"health check did not finish within {settings.timeout_s:g}"
                                   " s (model hangs or is far too slow)")
    if proc.returncode < 0:
        return HealthResult(False, f"model crashed the runtime (signal {-proc.returncode})")
    try:
        return HealthResult.from_dict(json.loads(proc.stdout.decode().strip().splitlines()[-1]))
    except (ValueError, IndexError, KeyError, UnicodeDecodeError):
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return HealthResult(False, f"health check process failed (exit {proc.returncode}): "
                                   f"{tail[0][:300]}")


_PARENT_ENV = "EDGEOPS_HEALTH_PARENT_PID"
_PR_SET_PDEATHSIG = 1       # <linux/prctl.h>


def _child_env(env: dict[str, str]) -> dict[str, str]:
    """The child's environment: our package root first on its path, and who its parent is."""
    root = str(Path(__file__).resolve().parents[1])
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([root, *(p for p in path if p != root)])
    env[_PARENT_ENV] = str(os.getpid())
    return env


def _die_with_parent() -> None:
    """SIGKILL this process when the agent that started it dies (Linux; elsewhere a no-op).

    Set from the child itself (``preexec_fn`` is unsafe in a threaded agent), so the parent may
    already be gone by now: then it exits at once.
    """
    parent = os.environ.get(_PARENT_ENV)
    if not sys.platform.startswith("linux") or not parent:
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        sys.stderr.write(f"health check: prctl(PR_SET_PDEATHSIG) failed: "
                         f"{os.strerror(ctypes.get_errno())}\n")
        return
    if str(os.getppid()) != parent:
        os._exit(3)         # the agent died before the kernel knew to tell us


def _main(argv: list[str]) -> int:
    _die_with_parent()
    slot_dir, target = Path(argv[0]), argv[1]
    settings = HealthSettings(**json.loads(argv[2])) if len(argv) > 2 else HealthSettings()
    result = check_slot(slot_dir, target, settings)
    sys.stdout.write(json.dumps(result.to_dict()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
