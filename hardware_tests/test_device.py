"""The on-device checks, in the order a blessing needs them.

Each test measures and leaves the verdict to :mod:`hardware_tests.checks`; a failed verdict is
one line (``pytrace=False``), and a check with nothing in the manifest to compare with is
skipped as "not applicable" with the measured figure, never passed.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from securesystemslib.signer import SSlibKey

from edgeops.bundle.manifest import ArtifactEntry
from hardware_tests.checks import (
    Tolerance,
    golden_verdict,
    latency_verdict,
    memory_verdict,
    percentiles_ms,
    stability_verdict,
)
from hardware_tests.conftest import CheckRecord, attempt
from hardware_tests.runtime import LoadedModel
from hardware_tests.suite import Golden, RssTracker, SuiteContext, replay_golden


def _load_key(path: Path) -> SSlibKey:
    import json

    problem = ""
    try:
        d = json.loads(path.read_text())
        keyid = d.pop("keyid")
        return SSlibKey.from_dict(keyid, d)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    pytest.fail(f"cannot read the targets public key {path} ({problem})", pytrace=False)


def test_integrity(hw: SuiteContext, artifact: ArtifactEntry, check: CheckRecord) -> None:
    """Every file matches the manifest's digests; the signature too when a key is given."""
    bundle = hw.require_bundle()
    check.figures["manifest_sha256"] = hw.manifest_sha256
    check.figures["artifact_sha256"] = artifact.file.sha256
    if hw.trusted_key is not None:
        key = _load_key(hw.trusted_key)
        keyids = attempt(lambda: bundle.verify([key]))
        check.message = f"signed by {', '.join(k[:12] for k in keyids)}; all digests match"
    else:
        for ref in bundle.manifest.files():
            attempt(functools.partial(bundle.read_file, ref.path))
        check.message = "all digests match (signature not checked: no --key given)"


def test_load(loaded: tuple[LoadedModel, float], check: CheckRecord) -> None:
    """The artifact loads in its runtime, on the intended provider (no silent CPU fallback)."""
    model, seconds = loaded
    check.figures.update(runtime=model.runtime, intended_provider=model.intended_provider,
                         active_providers=list(model.active_providers),
                         load_ms=round(seconds * 1000, 3))
    assert model.active_providers[0] == model.intended_provider
    check.message = f"{model.runtime} on {model.intended_provider}"


def test_golden(model: LoadedModel, golden: Golden, artifact: ArtifactEntry,
                check: CheckRecord, rss: RssTracker) -> None:
    """The golden inputs give the golden outputs within the manifest's tolerance."""
    got = replay_golden(model.run, golden)
    rss.sample()
    check.figures["samples"] = len(golden)
    verdict = golden_verdict(golden.outputs, got, Tolerance.from_manifest(artifact.tolerance))
    check.figures.update(verdict.figures)
    if not verdict.ok:
        pytest.fail(verdict.message, pytrace=False)
    check.message = verdict.message


def test_latency(hw: SuiteContext, model: LoadedModel, timing_inputs: dict[str, Any],
                 artifact: ArtifactEntry, check: CheckRecord, rss: RssTracker) -> None:
    """p50/p95 within the manifest's figures × the stated margin."""
    s = hw.settings
    for _ in range(s.warmup_runs):
        model.run(timing_inputs)
    samples = []
    for _ in range(s.latency_runs):
        start = time.perf_counter()
        model.run(timing_inputs)
        samples.append(time.perf_counter() - start)
        rss.sample()
    p50, p95 = percentiles_ms(samples)
    verdict = latency_verdict(p50, p95, artifact.metrics, s.latency_margin_ratio,
                              s.latency_slack_ms)
    check.figures.update(verdict.figures, runs=s.latency_runs, warmup_runs=s.warmup_runs)
    if not verdict.applicable:
        check.not_applicable(verdict.message)
    if not verdict.ok:
        pytest.fail(verdict.message, pytrace=False)
    check.message = verdict.message


def test_memory(hw: SuiteContext, model: LoadedModel, timing_inputs: dict[str, Any],
                artifact: ArtifactEntry, check: CheckRecord, rss: RssTracker) -> None:
    """Peak RSS growth from loading and running the model within the manifest's figure."""
    for _ in range(hw.settings.warmup_runs):
        model.run(timing_inputs)
        rss.sample()
    verdict = memory_verdict(rss.peak_growth_mib, artifact.metrics,
                             hw.settings.memory_margin_ratio)
    check.figures.update(verdict.figures, rss_baseline_mib=round(rss.baseline / 2**20, 1))
    if not verdict.applicable:
        check.not_applicable(verdict.message)
    if not verdict.ok:
        pytest.fail(verdict.message, pytrace=False)
    check.message = verdict.message


def test_stability(hw: SuiteContext, model: LoadedModel, timing_inputs: dict[str, Any],
                   check: CheckRecord, rss: RssTracker) -> None:
    """The same input, many times: identical outputs and no memory growth."""
    runs = hw.settings.stability_runs
    first = model.run(timing_inputs)
    settle = max(1, runs // 10)            # arenas and caches grow during the first runs
    for _ in range(settle):
        model.run(timing_inputs)
    start_rss = rss.sample()
    drift = 0.0
    for _ in range(runs):
        out = model.run(timing_inputs)
        rss.sample()
        for name, ref in first.items():
            diff = np.abs(np.asarray(out[name], np.float64) - np.asarray(ref, np.float64))
            drift = max(drift, float(np.max(diff)) if diff.size else 0.0)
    growth = (rss.now() - start_rss) / 2**20
    verdict = stability_verdict(drift, growth, runs, hw.settings.max_output_drift_abs,
                                hw.settings.max_rss_growth_mib)
    check.figures.update(verdict.figures)
    if not verdict.ok:
        pytest.fail(verdict.message, pytrace=False)
    check.message = verdict.message
