"""Opening a bundle for the suite: which artifact to test, its file, its golden samples.

Everything that can go wrong with the *input* (unreadable bundle, no artifact for this target,
altered artifact, no golden samples) is turned into one :class:`~edgeops.errors.EdgeOpsError`
with a message the checks show verbatim, so a bad bundle is a clear failure and never a crash.
The pytest plugin (``conftest.py``) only wires these into fixtures.
"""

from __future__ import annotations

import hashlib
import io
import platform
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import psutil

from edgeops.bundle import ArtifactEntry, Bundle, TensorSpec, read_bundle
from edgeops.config import DEFAULT_LIMITS
from edgeops.errors import BadContentError, EdgeOpsError, InvalidBundleError, UsageError
from edgeops.golden import golden_feeds, stack_outputs
from edgeops.targets import hardware_class as _profile_hardware
from hardware_tests.settings import HardwareSettings, default_target

__all__ = [
    "Golden",
    "RssTracker",
    "SuiteContext",
    "hardware_class",
    "load_golden",
    "open_suite",
    "output_names",
    "replay_golden",
    "synthetic_inputs",
]


def hardware_class(target: str) -> str:
    """The hardware class a target's blessing applies to (``TargetProfile.hardware``)."""
    return _profile_hardware(target) or f"unknown:{target}"


@dataclass(frozen=True)
class Golden:
    """Golden inputs and the artifact's own outputs for them, as the build machine recorded.

    Layout (edgeops/golden.py): ``inputs[name][i]`` is sample ``i``, fed as a batch of
    one; ``outputs`` are the per-sample outputs stacked with
    :func:`edgeops.golden.stack_outputs`.
    """

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    signature: tuple[TensorSpec, ...] = ()     # the manifest's inputs: batch axes, states

    def __len__(self) -> int:
        return min(len(v) for v in self.inputs.values()) if self.inputs else 0

    def sample(self, i: int) -> dict[str, np.ndarray]:
        return golden_feeds({k: v[i : i + 1] for k, v in self.inputs.items()}, self.signature)[0]

    @property
    def states(self) -> dict[str, str]:
        """Input → the output a streaming model feeds back into it at the next step."""
        return {t.name: t.state_from for t in self.signature if t.state_from is not None}


def replay_golden(run: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
                  golden: Golden) -> dict[str, np.ndarray]:
    """Run every golden sample as the build machine did and stack outputs the same way."""
    per_output: dict[str, list[np.ndarray]] = {}
    prev: Mapping[str, np.ndarray] = {}
    for i in range(len(golden)):
        feed = golden.sample(i)
        if i:       # a streaming model: in order, carrying its own state as on the device
            feed.update({k: np.asarray(prev[o]).astype(feed[k].dtype)
                         for k, o in golden.states.items() if o in prev})
        prev = run(feed)
        for name, value in prev.items():
            per_output.setdefault(name, []).append(np.asarray(value))
    return {name: stack_outputs(values) for name, values in per_output.items()}


def load_golden(data: bytes, where: str, max_bytes: int = DEFAULT_LIMITS.max_golden_bytes
                ) -> Golden:
    """Parse a golden ``.npz`` (``input/<name>``, ``output/<name>``); no pickles accepted."""
    if len(data) > max_bytes:
        raise InvalidBundleError(f"{where} is {len(data)} bytes, over the {max_bytes} limit")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: np.array(npz[k]) for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InvalidBundleError(f"{where} is not a readable .npz file ({exc})") from None
    inputs = {k.removeprefix("input/"): v for k, v in arrays.items() if k.startswith("input/")}
    outputs = {k.removeprefix("output/"): v for k, v in arrays.items() if k.startswith("output/")}
    if not inputs or not outputs or any(v.ndim == 0 or len(v) == 0 for v in inputs.values()):
        raise InvalidBundleError(f"{where} holds no golden samples "
                                 f"(needs input/<name> and output/<name> arrays)")
    return Golden(inputs, outputs)


def synthetic_inputs(specs: Sequence[TensorSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the declared shapes (dynamic dims as 1) for timing when golden data is absent."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in specs:
        shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in spec.shape)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            out[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            out[spec.name] = np.zeros(shape, dtype)
    return out


def _max_rss_bytes() -> int | None:
    """The kernel's high-water mark of this process's RSS, in bytes.

    On Linux this is ``VmHWM`` from /proc/self/status, which belongs to this process's memory
    map. ``getrusage``'s ``ru_maxrss`` is not usable there: it survives ``execve``, so a process
    started by a large parent (pytest running a big suite, a fleet agent) begins with the
    parent's peak and never sees its own.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:           # not on POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if platform.system() == "Darwin" else int(peak) * 1024


class RssTracker:
    """Resident memory of this process relative to a baseline taken before the model loads.

    Samples after each inference miss transient peaks inside a run, so the kernel's high-water
    mark is used too: when it rose after the baseline, it *is* the peak since then.
    """

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self.baseline = self.now()
        self.peak = self.baseline
        self._hwm_at_baseline = _max_rss_bytes()

    def now(self) -> int:
        return int(self._proc.memory_info().rss)

    def sample(self) -> int:
        rss = self.now()
        self.peak = max(self.peak, rss)
        return rss

    @property
    def peak_bytes(self) -> int:
        hwm = _max_rss_bytes()
        if hwm is not None and self._hwm_at_baseline is not None and hwm > self._hwm_at_baseline:
            return max(self.peak, hwm)
        return self.peak

    @property
    def peak_growth_mib(self) -> float:
        return (self.peak_bytes - self.baseline) / 2**20


@dataclass
class SuiteContext:
    """The bundle under test and the artifact this machine should run."""

    bundle_path: Path
    settings: HardwareSettings
    bundle: Bundle | None = None
    problem: EdgeOpsError | None = None          # why the bundle could not be opened
    target: str | None = None
    provider: str | None = None
    trusted_key: Path | None = None
    manifest_sha256: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def hardware(self) -> str:
        return hardware_class(self.target) if self.target else "unknown"

    def require_bundle(self) -> Bundle:
        if self.bundle is None:
            assert self.problem is not None
            raise self.problem
        return self.bundle

    def artifact(self) -> ArtifactEntry:
        bundle = self.require_bundle()
        if self.target is None:
            raise UsageError(f"no target profile matches this machine ({platform.machine()})",
                             hint="pass --target PROFILE (see `edgeops targets`)")
        entry = bundle.manifest.artifact_for(self.target)
        if entry is None:
            have = ", ".join(a.target for a in bundle.manifest.artifacts)
            raise BadContentError(
                f"bundle {bundle.manifest.name} {bundle.manifest.version} has no artifact for "
                f"target {self.target} (it has: {have})",
                hint=f"build it with `edgeops build --target {self.target}` or pass --target")
        return entry

    def golden(self) -> Golden:
        entry = self.artifact()
        if entry.golden is None:
            raise BadContentError(
                f"manifest has no golden samples for target {entry.target}",
                hint="rebuild with `edgeops build` (it records golden inputs and outputs)")
        golden = load_golden(self.require_bundle().read_file(entry.golden.path),
                             entry.golden.path)
        return replace(golden, signature=tuple(self.require_bundle().manifest.inputs))

    def extract_artifact(self, directory: Path) -> Path:
        """Copy the artifact out, checking its size and SHA-256 (altered → VerificationError)."""
        entry = self.artifact()
        return self.require_bundle().extract_file(entry.file.path,
                                                  directory / Path(entry.file.path).name)


def open_suite(bundle_path: Path, settings: HardwareSettings, target: str | None = None,
               provider: str | None = None, trusted_key: Path | None = None) -> SuiteContext:
    """Open ``bundle_path`` and choose the target; a bad bundle is recorded, not raised."""
    ctx = SuiteContext(Path(bundle_path), settings, target=target, provider=provider,
                       trusted_key=trusted_key)
    try:
        ctx.bundle = read_bundle(ctx.bundle_path)
    except EdgeOpsError as exc:
        ctx.problem = exc
        return ctx
    ctx.manifest_sha256 = hashlib.sha256(ctx.bundle.manifest_bytes).hexdigest()
    if target is None:
        import onnxruntime as ort  # a base dependency

        available: Sequence[str] = ort.get_available_providers()
        ctx.target = default_target(platform.machine(), available,
                                    [a.target for a in ctx.bundle.manifest.artifacts])
        ctx.notes.append(f"target {ctx.target} chosen for this {platform.machine()} machine")
    return ctx


def output_names(ctx: SuiteContext) -> list[str]:
    """The manifest's output names, in order (LiteRT may rename tensors)."""
    return [t.name for t in ctx.require_bundle().manifest.outputs]
